"""Every accepted and rejected configuration form, with the message the user sees."""

from __future__ import annotations

import itertools

import pytest
from azure.servicebus import parse_connection_string

from sbworker.core import config
from sbworker.core.config import Auth, load, parse_dts
from sbworker.core.errors import ConfigError


def test_bare_environment_points_at_the_local_emulators() -> None:
    s = load({})
    assert s.dts.endpoint == "http://localhost:8080"
    assert s.dts.auth is Auth.NONE and not s.dts.secure and s.dts.taskhub == "default"
    assert s.servicebus.access == config.ConnectionString(config.DEFAULT_SERVICEBUS_CONNECTION_STRING)
    assert s.servicebus.source.entity.name == "workflow-requests" == config.DEFAULT_QUEUE
    assert s.servicebus.source.receive_from == (s.servicebus.source.entity,)
    assert s.servicebus.source.retry_queue == config.DEFAULT_QUEUE  # a queue retries on itself
    assert s.listener.max_concurrent_messages == 128 and s.listener.health_port == 8000


@pytest.mark.parametrize(
    ("conn", "endpoint", "auth", "client_id", "secure"),
    [
        ("Endpoint=http://localhost:8080;Authentication=None", "http://localhost:8080", Auth.NONE, None, False),
        ("endpoint=http://127.0.0.1:9000 ; authentication=none", "http://127.0.0.1:9000", Auth.NONE, None, False),
        (
            "Endpoint=https://s1.westus2.durabletask.io;Authentication=ManagedIdentity;ClientID=abc-123",
            "https://s1.westus2.durabletask.io", Auth.MANAGED_IDENTITY, "abc-123", True,
        ),
        (
            "Endpoint=https://s1.westus2.durabletask.io/;Authentication=DefaultAzure",
            "https://s1.westus2.durabletask.io", Auth.DEFAULT_AZURE, None, True,
        ),
        ("Endpoint=https://localhost:8443;Authentication=None", "https://localhost:8443", Auth.NONE, None, True),
    ],
)
def test_dts_connection_strings(conn: str, endpoint: str, auth: Auth, client_id: str | None, secure: bool) -> None:
    s = parse_dts(conn)
    assert (s.endpoint, s.auth, s.client_id, s.secure) == (endpoint, auth, client_id, secure)


def test_managed_identity_client_id_falls_back_to_azure_client_id() -> None:
    s = load({
        "DTS_CONNECTION_STRING": "Endpoint=https://x.durabletask.io;Authentication=ManagedIdentity",
        "AZURE_CLIENT_ID": "from-env",
    })
    assert s.dts.client_id == "from-env"


def test_taskhub_from_env_and_from_string() -> None:
    assert load({"TASKHUB_NAME": "hub-1"}).dts.taskhub == "hub-1"
    conn = "Endpoint=http://localhost:8080;Authentication=None;TaskHub=hub2"
    assert load({"DTS_CONNECTION_STRING": conn, "TASKHUB_NAME": "x"}).dts.taskhub == "hub2"


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"DTS_CONNECTION_STRING": "Authentication=None"}, "DTS_CONNECTION_STRING", "missing Endpoint"),
        ({"DTS_CONNECTION_STRING": "Endpoint=http://localhost:8080"}, "DTS_CONNECTION_STRING",
         "missing Authentication"),
        ({"DTS_CONNECTION_STRING": "Endpoint=localhost:8080;Authentication=None"}, "DTS_CONNECTION_STRING",
         "http:// or https://"),
        ({"DTS_CONNECTION_STRING": "Endpoint=http://localhost:99999;Authentication=None"}, "DTS_CONNECTION_STRING",
         "invalid port"),
        ({"DTS_CONNECTION_STRING": "Endpoint=http://h:1/x;Authentication=None"}, "DTS_CONNECTION_STRING", "path"),
        # urlsplit raises on an unclosed '[': each such setting is still a one-line error, never a traceback
        ({"DTS_CONNECTION_STRING": "Endpoint=http://[;Authentication=None"}, "DTS_CONNECTION_STRING",
         "invalid port or host"),
        ({"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://[;SharedAccessKeyName=a;SharedAccessKey=b"},
         "SERVICEBUS_CONNECTION_STRING", "invalid Endpoint=sb://"),
        ({"SERVICEBUS_NAMESPACE": "sb://["}, "SERVICEBUS_NAMESPACE", "expected <name>.servicebus.windows.net"),
        ({"SERVICEBUS_NAMESPACE": "sb://localhost:99999"}, "SERVICEBUS_NAMESPACE", "expected <name>.servicebus"),
        ({"DTS_PAYLOAD_STORAGE": "https://["}, "DTS_PAYLOAD_STORAGE", "expected https://<account>"),
        ({"DTS_CONNECTION_STRING": "Endpoint=http://h:1;Authentication=Kerberos"}, "DTS_CONNECTION_STRING",
         "unsupported authentication 'Kerberos'"),
        ({"DTS_CONNECTION_STRING": "Endpoint=http://h:1;Authentication=None;Colour=red"}, "DTS_CONNECTION_STRING",
         "unknown key 'colour'"),
        ({"DTS_CONNECTION_STRING": "garbage"}, "DTS_CONNECTION_STRING", "Key=Value"),
        ({"DTS_CONNECTION_STRING": "Endpoint=https://x.durabletask.io;Authentication=None"}, "DTS_CONNECTION_STRING",
         "only for a local emulator"),
        ({"TASKHUB_NAME": "bad hub!"}, "TASKHUB_NAME", "letters, digits"),
        ({"MAX_CONCURRENT_MESSAGES": "lots"}, "MAX_CONCURRENT_MESSAGES", "expected an integer"),
        ({"MAX_CONCURRENT_MESSAGES": "0"}, "MAX_CONCURRENT_MESSAGES", "between 1 and 1024"),
        ({"WORKER_THREADS": "0"}, "WORKER_THREADS", "between 1 and 1024"),
        ({"WORKER_MAX_CONCURRENT_ORCHESTRATIONS": "many"}, "WORKER_MAX_CONCURRENT_ORCHESTRATIONS",
         "expected an integer"),
        ({"WORKER_MAX_CONCURRENT_ACTIVITIES": "-1"}, "WORKER_MAX_CONCURRENT_ACTIVITIES", "between 1 and 10000"),
        ({"PREFETCH_COUNT": "-1"}, "PREFETCH_COUNT", "between 0"),
        ({"SHUTDOWN_GRACE_SECONDS": "nan"}, "SHUTDOWN_GRACE_SECONDS", "between"),
        ({"APPROVAL_NOT_FOUND_WINDOW_SECONDS": "soon"}, "APPROVAL_NOT_FOUND_WINDOW_SECONDS", "number of seconds"),
        ({"HEALTH_PORT": "70000"}, "HEALTH_PORT", "between 0 and 65535"),
        ({"MAX_INPUT_BYTES": "big"}, "MAX_INPUT_BYTES", "expected an integer"),
        ({"MAX_INPUT_BYTES": "2000000"}, "MAX_INPUT_BYTES", "between 1024 and 1048576 (more needs large-payload "
         "storage, DTS_PAYLOAD_STORAGE), got 2000000"),
        ({"MAX_INPUT_BYTES": "20000000", "DTS_PAYLOAD_STORAGE": "UseDevelopmentStorage=true"}, "MAX_INPUT_BYTES",
         "between 1024 and 10485760, got 20000000"),
        ({"DTS_MAX_RECEIVE_BYTES": "1000000"}, "DTS_MAX_RECEIVE_BYTES", "between 4194304 and 268435456"),
        ({"DTS_PAYLOAD_CONTAINER": "payloads"}, "DTS_PAYLOAD_CONTAINER", "only used with DTS_PAYLOAD_STORAGE"),
        ({"DTS_PAYLOAD_STORAGE": "garbage"}, "DTS_PAYLOAD_STORAGE", "Key=Value"),
        ({"DTS_PAYLOAD_STORAGE": "DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net"},
         "DTS_PAYLOAD_STORAGE", "needs AccountName= or BlobEndpoint="),
        ({"DTS_PAYLOAD_STORAGE": "https://"}, "DTS_PAYLOAD_STORAGE", "expected https://<account>"),
        ({"DTS_PAYLOAD_STORAGE": "UseDevelopmentStorage=true", "DTS_PAYLOAD_CONTAINER": "Bad_Name"},
         "DTS_PAYLOAD_CONTAINER", "not a valid blob container name"),
        ({"DTS_PAYLOAD_STORAGE": "UseDevelopmentStorage=true", "DTS_PAYLOAD_THRESHOLD_BYTES": "2000000"},
         "DTS_PAYLOAD_THRESHOLD_BYTES", "between 1024 and 1048576"),
        ({"MAX_EVENT_BYTES": "10"}, "MAX_EVENT_BYTES", "between 1024 and 1048576 (more needs"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL", "expected DEBUG"),
        ({"SERVICEBUS_QUEUE": "a queue"}, "SERVICEBUS_QUEUE", "not a valid queue name"),
        ({"SERVICEBUS_QUEUE": "q", "SERVICEBUS_TOPIC": "t", "SERVICEBUS_SUBSCRIPTION": "s"}, "SERVICEBUS_QUEUE",
         "not both"),
        ({"SERVICEBUS_QUEUE": "q", "SERVICEBUS_TOPIC": "t"}, "SERVICEBUS_QUEUE", "not both"),
        ({"SERVICEBUS_TOPIC": "t"}, "SERVICEBUS_SUBSCRIPTION", "required with SERVICEBUS_TOPIC"),
        ({"SERVICEBUS_SUBSCRIPTION": "s"}, "SERVICEBUS_TOPIC", "required with SERVICEBUS_SUBSCRIPTION"),
        ({"SERVICEBUS_TOPIC": "t", "SERVICEBUS_SUBSCRIPTION": "a/b"}, "SERVICEBUS_SUBSCRIPTION", "contains '/'"),
        ({"SERVICEBUS_TOPIC": "t", "SERVICEBUS_SUBSCRIPTION": "s" * 51}, "SERVICEBUS_SUBSCRIPTION",
         "longer than 50"),
        ({"SERVICEBUS_TOPIC": "a topic", "SERVICEBUS_SUBSCRIPTION": "s"}, "SERVICEBUS_TOPIC", "not a valid topic"),
        ({"SERVICEBUS_TOPIC": "t", "SERVICEBUS_SUBSCRIPTION": "s", "SERVICEBUS_RETRY_QUEUE": "t"},
         "SERVICEBUS_RETRY_QUEUE", "not the topic"),
        ({"SERVICEBUS_RETRY_QUEUE": "r"}, "SERVICEBUS_RETRY_QUEUE", "only used with SERVICEBUS_TOPIC"),
        ({"SERVICEBUS_CONNECTION_STRING": "Endpoint=http://x;SharedAccessKeyName=a;SharedAccessKey=b"},
         "SERVICEBUS_CONNECTION_STRING", "Endpoint=sb://"),
        ({"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://x;SharedAccessKeyName=a"}, "SERVICEBUS_CONNECTION_STRING",
         "SharedAccessKey"),
        ({"SERVICEBUS_NAMESPACE": "ns.servicebus.windows.net", "SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://x;"
          "SharedAccessKeyName=a;SharedAccessKey=b"}, "SERVICEBUS_NAMESPACE", "not both"),
        ({"SERVICEBUS_NAMESPACE": "bad/ns"}, "SERVICEBUS_NAMESPACE", "expected <name>.servicebus.windows.net"),
        ({"SERVICEBUS_NAMESPACE": "ns", "SERVICEBUS_AUTHENTICATION": "None"}, "SERVICEBUS_AUTHENTICATION",
         "unsupported authentication"),
        ({"SERVICEBUS_AUTHENTICATION": "ManagedIdentity"}, "SERVICEBUS_AUTHENTICATION", "needs SERVICEBUS_NAMESPACE"),
        ({"SERVICEBUS_SESSIONS": "yes"}, "SERVICEBUS_SESSIONS", "expected true or false"),
        ({"MAX_CONCURRENT_SESSIONS": "0"}, "MAX_CONCURRENT_SESSIONS", "between 1 and 256"),
        ({"SESSION_IDLE_SECONDS": "0"}, "SESSION_IDLE_SECONDS", "between 0.1 and 3600"),
        ({"EVENT_LOOP": "tokio"}, "EVENT_LOOP", "expected auto, uvloop or asyncio"),
    ],
)
def test_rejected_configuration_names_the_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    assert info.value.variable == variable
    message = str(info.value)
    assert message.startswith(f"configuration error: {variable}: ")
    assert fragment in message
    assert "\n" not in message


def test_topic_form_reads_the_subscription_and_its_own_retry_queue() -> None:
    source = load({"SERVICEBUS_TOPIC": "workflow-events", "SERVICEBUS_SUBSCRIPTION": "sbworker"}).servicebus.source
    assert source.topic == "workflow-events" and source.publish_to == "workflow-events"
    assert source.entity.path == "workflow-events/Subscriptions/sbworker"
    assert source.retry_queue == "workflow-events-sbworker-retry"
    assert [e.path for e in source.receive_from] == ["workflow-events/Subscriptions/sbworker",
                                                     "workflow-events-sbworker-retry"]
    named = load({"SERVICEBUS_TOPIC": "t", "SERVICEBUS_SUBSCRIPTION": "s", "SERVICEBUS_RETRY_QUEUE": "mine"})
    assert named.servicebus.source.retry_queue == "mine"


def test_sessions_are_off_by_default_and_switch_every_entity_of_the_source() -> None:
    plain = load({})
    assert not plain.servicebus.source.sessions
    assert plain.listener.max_concurrent_sessions == config.DEFAULT_MAX_CONCURRENT_SESSIONS
    assert plain.listener.session_idle_seconds == config.DEFAULT_SESSION_IDLE_SECONDS
    # On, the queue by default is the session-enabled one (Service Bus cannot switch an existing queue over).
    queue = load({"SERVICEBUS_SESSIONS": "True", "MAX_CONCURRENT_SESSIONS": "4", "SESSION_IDLE_SECONDS": "2.5"})
    assert queue.servicebus.source.sessions and queue.servicebus.source.entity.name == config.DEFAULT_SESSION_QUEUE
    assert (queue.listener.max_concurrent_sessions, queue.listener.session_idle_seconds) == (4, 2.5)
    named = load({"SERVICEBUS_SESSIONS": "true", "SERVICEBUS_QUEUE": "orders"}).servicebus.source
    assert named.sessions and named.entity.name == "orders"
    topic = load({"SERVICEBUS_SESSIONS": "true", "SERVICEBUS_TOPIC": "t", "SERVICEBUS_SUBSCRIPTION": "s"})
    assert topic.servicebus.source.sessions and topic.servicebus.source.retry_queue == "t-s-retry"
    assert load({"SERVICEBUS_SESSIONS": "false"}).servicebus.source.entity.name == config.DEFAULT_QUEUE


def test_a_malformed_connection_string_never_echoes_its_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load({"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://x;SuperSecretKeyMaterial"})
    assert "SuperSecret" not in str(info.value)


# Each slot of a SAS connection string, well and badly formed (None: left out), for the comparison below.
SAS_SLOTS = (
    (None, "Endpoint=sb://h.servicebus.windows.net/", "Endpoint=sb://", "endpoint=sb://h", "Endpoint=sb://["),
    (None, "SharedAccessKeyName=k", "SharedAccessKeyName=", "sharedaccesskeyname=k"),
    (None, "SharedAccessKey=a2V5=", "SharedAccessKey="),
    (None, "SharedAccessSignature=SharedAccessSignature sr=h&sig=x&se=1&skn=k", "SharedAccessSignature=",
     "sharedaccesssignature=x"),
    (None, "EntityPath=q", "UseDevelopmentEmulator=true", "Other=1", "junk", "", " ", "Endpoint=sb://other"),
)


def test_connection_strings_read_without_the_sdk_are_read_as_the_sdk_reads_them() -> None:
    """Every string `_plain_sas_fields` reads is one the SDK's parser accepts, read to the same fields; any other
    string goes to the SDK (every combination of the slots, the last one first or last, with trailing ';')."""
    read = 0
    for *slots, extra in itertools.product(*SAS_SLOTS):
        for ordered in ([*slots, extra], [extra, *slots]):
            for tail in ("", ";", ";;"):
                conn = ";".join(part for part in ordered if part is not None) + tail
                plain = config._plain_sas_fields(conn)
                try:
                    sdk = parse_connection_string(conn)
                except ValueError:
                    assert plain is None, conn
                    continue
                assert plain in (None, config.SasFields(sdk.fully_qualified_namespace, sdk.shared_access_key,
                                                        sdk.shared_access_signature)), conn
                read += plain is not None
    assert read >= 50  # and many strings are read both ways


@pytest.mark.parametrize("conn", [
    config.DEFAULT_SERVICEBUS_CONNECTION_STRING,
    "Endpoint=sb://localhost:5673;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"
    "UseDevelopmentEmulator=true;",  # localbus's
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=a2V5=",
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=ns&sig=x&se=1&skn=k",
])
def test_the_usual_connection_strings_are_read_without_the_sdk(conn: str) -> None:
    assert config._plain_sas_fields(conn) is not None


def test_servicebus_namespace_selects_entra_id() -> None:
    s = load({"SERVICEBUS_NAMESPACE": "myns", "AZURE_CLIENT_ID": "cid"}).servicebus
    assert s.access == config.EntraId("myns.servicebus.windows.net", Auth.MANAGED_IDENTITY, "cid")
    assert s.access.use_tls
    s = load({"SERVICEBUS_NAMESPACE": "sb://other.servicebus.windows.net/"}).servicebus
    assert s.access == config.EntraId("other.servicebus.windows.net", Auth.DEFAULT_AZURE, None)
    s = load({"SERVICEBUS_NAMESPACE": "n.servicebus.windows.net", "SERVICEBUS_AUTHENTICATION": "defaultazure",
              "AZURE_CLIENT_ID": "cid"}).servicebus
    assert s.access == config.EntraId("n.servicebus.windows.net", Auth.DEFAULT_AZURE, None)
    local = load({"SERVICEBUS_NAMESPACE": "localhost:5673"}).servicebus.access
    assert isinstance(local, config.EntraId) and not local.use_tls


def test_endpoint_for_logs_has_no_secret() -> None:
    s = load({"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://host:5673;SharedAccessKeyName=k;SharedAccessKey=TOPSECRET"})
    assert s.servicebus.endpoint_for_logs == "sb://host:5673"


def test_large_payload_storage_is_off_by_default_and_its_key_is_a_secret() -> None:
    assert load({}).dts.payload_storage is None
    key = "a2V5LWZvci10ZXN0cy1vbmx5LTEyMzQ1Ng=="
    conn = f"DefaultEndpointsProtocol=http;AccountName=dev;AccountKey={key};BlobEndpoint=http://127.0.0.1:1/dev;"
    settings = load({"DTS_PAYLOAD_STORAGE": conn, "DTS_PAYLOAD_THRESHOLD_BYTES": "4096", "MAX_INPUT_BYTES": "5000000"})
    storage = settings.dts.payload_storage
    assert storage is not None and storage.connection_string == conn and storage.account_url is None
    assert (storage.container, storage.threshold_bytes) == ("durabletask-payloads", 4096)
    assert settings.limits.max_input_bytes == 5_000_000
    assert key in settings.secrets()
    by_identity = load({"DTS_PAYLOAD_STORAGE": "https://acct.blob.core.windows.net"}).dts.payload_storage
    assert by_identity is not None and by_identity.account_url == "https://acct.blob.core.windows.net"


def test_the_worker_concurrency_settings_reach_the_sdks_worker() -> None:
    from durabletask.worker import ConcurrencyOptions

    from listener import service

    settings = config.load({})
    assert (settings.worker.threads, settings.worker.max_concurrent_orchestrations,
            settings.worker.max_concurrent_activities) == (64, 128, 128)
    tuned = config.load({"WORKER_THREADS": "7", "WORKER_MAX_CONCURRENT_ORCHESTRATIONS": "11",
                         "WORKER_MAX_CONCURRENT_ACTIVITIES": "13"})
    options = service.dts_worker(tuned.dts, concurrency=tuned.worker).concurrency_options
    assert (options.maximum_thread_pool_workers, options.maximum_concurrent_orchestration_work_items,
            options.maximum_concurrent_activity_work_items) == (7, 11, 13)
    # Without settings (the tests' fixtures, bench.plain_worker's equivalent): the SDK's own defaults.
    sdk = ConcurrencyOptions()
    assert service.dts_worker(tuned.dts).concurrency_options.maximum_thread_pool_workers == \
        sdk.maximum_thread_pool_workers


@pytest.mark.parametrize(("value", "kind"), [(None, "uvloop"), ("auto", "uvloop"), ("UVLOOP", "uvloop"),
                                             ("asyncio", "asyncio")])
def test_event_loop_is_uvloop_unless_turned_off(value: str | None, kind: str) -> None:
    # uvloop is a dependency on this platform (pyproject.toml), so auto finds it
    assert load({} if value is None else {"EVENT_LOOP": value}).listener.event_loop == kind


def test_event_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where uvloop does not build (Windows, PyPy) auto falls back to asyncio, and insisting on it is an error."""
    real = config.importlib.util.find_spec
    monkeypatch.setattr(config.importlib.util, "find_spec",
                        lambda name, *args: None if name == "uvloop" else real(name, *args))
    assert load({}).listener.event_loop == "asyncio"
    with pytest.raises(ConfigError, match="EVENT_LOOP: uvloop is not installed"):
        load({"EVENT_LOOP": "uvloop"})

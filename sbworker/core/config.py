"""Environment → one frozen Settings object.

This is the only module that reads the environment. Every rule about a setting, and every error message for a
bad one, lives here, so `sbworker` can refuse a bad configuration with one line naming the variable.
"""

from __future__ import annotations

import enum
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import SplitResult, urlsplit

from sbworker.core.codes import CLOUDEVENT_TYPES
from sbworker.core.entities import MAX_SUBSCRIPTION, Source, name_problem, queue_source, topic_source
from sbworker.core.errors import ConfigError
from sbworker.core.limits import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_INPUT_BYTES,
    DTS_PAYLOAD_BYTES,
    MAX_CLOUDEVENT_ATTRIBUTE_CHARS,
    Limits,
)
from sbworker.core.net import is_loopback

# The official emulators' well-known local values: a bare checkout talks to them (or to localbus) unconfigured.
DEFAULT_DTS_CONNECTION_STRING = "Endpoint=http://localhost:8080;Authentication=None"
DEFAULT_TASKHUB = "default"
DEFAULT_SERVICEBUS_CONNECTION_STRING = (
    "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
)
# Kept equal to the entities in sbworker/Config.json and infra/ (a test checks all three agree).
DEFAULT_QUEUE = "workflow-requests"
# With SERVICEBUS_SESSIONS=true: Service Bus cannot switch sessions on for an existing queue, so the session-enabled
# one has a name of its own (Config.json and infra/ deploy it beside the other).
DEFAULT_SESSION_QUEUE = "workflow-requests-sessions"
DEFAULT_TOPIC = "workflow-events"
DEFAULT_SUBSCRIPTION = "sbworker"
DEFAULT_SESSION_SUBSCRIPTION = "sbworker-sessions"  # the session-enabled one (`sbworker dev --topic --sessions`)

#: Every environment variable the service reads. Deployment files must set each one (a test checks this).
ENV_VARS: tuple[str, ...] = (
    "DTS_CONNECTION_STRING",
    "TASKHUB_NAME",
    "SERVICEBUS_CONNECTION_STRING",
    "SERVICEBUS_NAMESPACE",
    "SERVICEBUS_QUEUE",
    "SERVICEBUS_TOPIC",
    "SERVICEBUS_SUBSCRIPTION",
    "SERVICEBUS_RETRY_QUEUE",
    "SERVICEBUS_AUTHENTICATION",
    "SERVICEBUS_SESSIONS",
    "AZURE_CLIENT_ID",
    "MAX_CONCURRENT_MESSAGES",
    "MAX_CONCURRENT_SESSIONS",
    "SESSION_IDLE_SECONDS",
    "PREFETCH_COUNT",
    "MAX_MESSAGE_BYTES",
    "MAX_INPUT_BYTES",
    "MAX_EVENT_BYTES",
    "DTS_MAX_RECEIVE_BYTES",
    "APPROVAL_NOT_FOUND_WINDOW_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "HEALTH_PORT",
    "LOG_LEVEL",
    "CLOUDEVENTS_TYPES",
    "WORKER_MAX_CONCURRENT_ORCHESTRATIONS",
    "WORKER_MAX_CONCURRENT_ACTIVITIES",
    "WORKER_THREADS",
    "EVENT_LOOP",
)

#: Large-payload storage (the durabletask SDK's externalisation to Azure Blob storage): opt-in, so, like the OTEL_*
#: variables, not in ENV_VARS; validated here, applied in sbworker/core/clients.py.
PAYLOAD_ENV_VARS: tuple[str, ...] = ("DTS_PAYLOAD_STORAGE", "DTS_PAYLOAD_CONTAINER", "DTS_PAYLOAD_THRESHOLD_BYTES")
#: The SDK's own cap on one externalised payload (LargePayloadStorageOptions.max_stored_payload_bytes).
MAX_STORED_PAYLOAD_BYTES = 10 * 1024 * 1024

class Auth(enum.StrEnum):
    """How we authenticate to DTS or Service Bus."""

    NONE = "None"  # local emulator / in-memory backend (DTS only)
    MANAGED_IDENTITY = "ManagedIdentity"
    DEFAULT_AZURE = "DefaultAzure"
    CONNECTION_STRING = "ConnectionString"  # Service Bus SAS (emulator / localbus only in our deployments)


@dataclass(frozen=True)
class PayloadStorage:
    """Where the SDK's large-payload externalisation keeps payloads over `threshold_bytes` (Azure Blob storage).

    Exactly one of `connection_string` (a storage connection string, e.g. Azurite's) and `account_url` (then the
    DTS credential signs in: managed identity or DefaultAzure) is set.
    """

    connection_string: str | None
    account_url: str | None
    container: str = "durabletask-payloads"
    threshold_bytes: int = 262_144  # the SDK's default (and .NET's)


@dataclass(frozen=True)
class DtsSettings:
    """Where the Durable Task Scheduler is and how to authenticate to it."""

    endpoint: str  # with scheme, as the SDK accepts it: http://localhost:8080 or https://x.durabletask.io
    taskhub: str
    auth: Auth
    client_id: str | None  # user-assigned managed identity; None = system-assigned / not used
    # The largest gRPC message a DTS channel receives (see README "Limits"): at least DTS's own 4 MiB, so anything
    # DTS may send arrives; more, so that a history past it still reaches the worker instead of ending its stream.
    max_receive_bytes: int = 16 * 1024 * 1024
    payload_storage: PayloadStorage | None = None  # DTS_PAYLOAD_STORAGE: off unless configured
    # The longest wait of the worker between two attempts to open its work-item stream; None keeps the SDK's (1 s
    # doubling up to 30 s, with jitter). Not an environment variable: tests that end the stream on purpose set it.
    worker_reconnect_cap_seconds: float | None = None

    @property
    def secure(self) -> bool:
        return self.endpoint.lower().startswith("https://")


@dataclass(frozen=True)
class ConnectionString:
    """Shared access keys from a connection string: the emulator and localbus in our deployments."""

    connection_string: str

    @property
    def endpoint(self) -> str:
        return f"sb://{_sas_fields(self.connection_string).fully_qualified_namespace}"

    def secrets(self) -> list[str]:
        fields = _sas_fields(self.connection_string)
        return [v for v in (fields.shared_access_key, fields.shared_access_signature) if v]


@dataclass(frozen=True)
class EntraId:
    """A token (managed identity, or DefaultAzureCredential for people) for a namespace: Azure's way."""

    namespace: str  # fully qualified (or localhost:port for a local broker that accepts tokens)
    auth: Auth  # MANAGED_IDENTITY or DEFAULT_AZURE
    client_id: str | None  # user-assigned managed identity; None = system-assigned / not used

    @property
    def use_tls(self) -> bool:
        """A local broker has no TLS; every Azure namespace does."""
        return not is_local_namespace(self.namespace)


@dataclass(frozen=True)
class ServiceBusSettings:
    """Which queue or subscription to read and how to reach it."""

    source: Source
    access: ConnectionString | EntraId

    @property
    def endpoint_for_logs(self) -> str:
        """Where we connect, without any secret: safe to log."""
        return self.access.namespace if isinstance(self.access, EntraId) else self.access.endpoint


# Measured (bench row 11 and its sweep, README "Sessions"): over 50 busy sessions, 32 slots kept p50 latency at a
# few ms where 16 queued for half a second, at half the connections and idle CPU of 64; releasing a session after
# 0.1 s without a message, not 0.25 or 1 s, keeps slots free for the sessions waiting.
DEFAULT_MAX_CONCURRENT_SESSIONS = 32
DEFAULT_SESSION_IDLE_SECONDS = 0.1
# Measured in rotated rounds (bench.concurrency, README "Why these defaults"): 128 in hand covers latency better
# than 64 and costs less CPU per message; prefetch 100 beat 0 and 300 brought nothing more.
DEFAULT_MAX_CONCURRENT_MESSAGES = 128
DEFAULT_PREFETCH_COUNT = 100


@dataclass(frozen=True)
class ListenerSettings:
    """How the listener receives and settles."""

    max_concurrent_messages: int
    prefetch_count: int
    max_message_bytes: int
    approval_not_found_window_seconds: float
    shutdown_grace_seconds: float
    health_port: int  # 0 disables the health endpoint
    log_level: str
    # Where the health endpoint listens: every interface in a container (the probes come from outside it);
    # `sbworker dev` keeps it on loopback.
    health_host: str = "0.0.0.0"
    # CloudEvents type -> the contract's subject: the defaults (sbworker.start, ...) plus CLOUDEVENTS_TYPES.
    cloudevent_types: Mapping[str, str] = field(default_factory=lambda: dict(CLOUDEVENT_TYPES))
    # Session mode (SERVICEBUS_SESSIONS=true): sessions read at once, each one message at a time, and how long a
    # session without a new message is kept before it is released for the next one (README "Sessions").
    max_concurrent_sessions: int = DEFAULT_MAX_CONCURRENT_SESSIONS
    session_idle_seconds: float = DEFAULT_SESSION_IDLE_SECONDS
    # The event loop `sbworker run` drives the listener with: "uvloop" or "asyncio" (EVENT_LOOP; README
    # "Configuration"). Constructed settings keep asyncio's own; `load` picks uvloop wherever it is installed.
    event_loop: str = "asyncio"


@dataclass(frozen=True)
class WorkerSettings:
    """How much the co-hosted DTS worker runs at once: the durabletask SDK's ConcurrencyOptions (the
    README's Performance section says why these defaults)."""

    # The SDK runs each work item, and the gRPC call that completes it, on a thread of this pool: a round trip
    # to DTS holds a thread, so through real latency the pool, not the CPU, bounds the work items per second.
    threads: int = 64
    # How many work items DTS hands this worker at once: twice the threads keeps every thread fed while others wait
    # for their round trip, without one replica holding work that another could start sooner.
    max_concurrent_orchestrations: int = 128
    max_concurrent_activities: int = 128


@dataclass(frozen=True)
class Settings:
    dts: DtsSettings
    servicebus: ServiceBusSettings
    listener: ListenerSettings
    limits: Limits = DEFAULT_LIMITS  # what a message may carry into DTS (sbworker.core.limits)
    worker: WorkerSettings = WorkerSettings()

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line (the log formatter removes them)."""
        access = self.servicebus.access
        found = access.secrets() if isinstance(access, ConnectionString) else []
        storage = self.dts.payload_storage.connection_string if self.dts.payload_storage else None
        if storage:  # a storage connection string holds an account key or a SAS
            keys = key_values(storage, "DTS_PAYLOAD_STORAGE")
            found += [keys[k] for k in ("accountkey", "sharedaccesssignature") if keys.get(k)]
        return found


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ
    client_id = optional(env, "AZURE_CLIENT_ID")
    dts = replace(
        parse_dts(env.get("DTS_CONNECTION_STRING") or DEFAULT_DTS_CONNECTION_STRING, taskhub=_taskhub(env),
                  default_client_id=client_id),
        max_receive_bytes=integer(env, "DTS_MAX_RECEIVE_BYTES", 16 * 1024 * 1024, low=4 * 1024 * 1024,
                                  high=256 * 1024 * 1024),
        payload_storage=payload_storage(env),
    )
    return Settings(
        dts=dts,
        servicebus=_servicebus(env, client_id),
        listener=ListenerSettings(
            max_concurrent_messages=integer(env, "MAX_CONCURRENT_MESSAGES", DEFAULT_MAX_CONCURRENT_MESSAGES, low=1,
                                            high=1024),
            prefetch_count=integer(env, "PREFETCH_COUNT", DEFAULT_PREFETCH_COUNT, low=0, high=10_000),
            max_message_bytes=integer(env, "MAX_MESSAGE_BYTES", 262_144, low=256, high=100 * 1024 * 1024),
            approval_not_found_window_seconds=number(
                env, "APPROVAL_NOT_FOUND_WINDOW_SECONDS", 300.0, low=0.0, high=7 * 24 * 3600.0
            ),
            shutdown_grace_seconds=number(env, "SHUTDOWN_GRACE_SECONDS", 30.0, low=0.0, high=3600.0),
            health_port=integer(env, "HEALTH_PORT", 8000, low=0, high=65535),
            log_level=_log_level(env),
            cloudevent_types=cloudevent_types(env),
            max_concurrent_sessions=integer(env, "MAX_CONCURRENT_SESSIONS", DEFAULT_MAX_CONCURRENT_SESSIONS, low=1,
                                            high=256),
            session_idle_seconds=number(env, "SESSION_IDLE_SECONDS", DEFAULT_SESSION_IDLE_SECONDS, low=0.1,
                                        high=3600.0),
            event_loop=event_loop(env),
        ),
        limits=_limits(env, large_payloads=dts.payload_storage is not None),
        worker=_worker(env),
    )


def _worker(env: Mapping[str, str]) -> WorkerSettings:
    default = WorkerSettings()
    return WorkerSettings(
        max_concurrent_orchestrations=integer(env, "WORKER_MAX_CONCURRENT_ORCHESTRATIONS",
                                              default.max_concurrent_orchestrations, low=1, high=10_000),
        max_concurrent_activities=integer(env, "WORKER_MAX_CONCURRENT_ACTIVITIES", default.max_concurrent_activities,
                                          low=1, high=10_000),
        threads=integer(env, "WORKER_THREADS", default.threads, low=1, high=1024),
    )


def _limits(env: Mapping[str, str], *, large_payloads: bool) -> Limits:
    """Up to DTS's own ceiling for one payload (1 MiB); up to the SDK's 10 MiB with large-payload storage."""
    high = MAX_STORED_PAYLOAD_BYTES if large_payloads else DTS_PAYLOAD_BYTES
    hint = "" if large_payloads else " (more needs large-payload storage, DTS_PAYLOAD_STORAGE)"
    return Limits(
        max_input_bytes=integer(env, "MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES, low=1024, high=high, hint=hint),
        max_event_bytes=integer(env, "MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES, low=1024, high=high, hint=hint),
    )


def payload_storage(env: Mapping[str, str]) -> PayloadStorage | None:
    """DTS_PAYLOAD_STORAGE: a storage connection string, or an https:// blob account URL (signed in as for DTS)."""
    name = "DTS_PAYLOAD_STORAGE"
    raw = optional(env, name)
    if raw is None:
        for other in PAYLOAD_ENV_VARS[1:]:
            if optional(env, other) is not None:
                raise ConfigError(other, f"only used with {name}")
        return None
    if raw.lower().startswith(("http://", "https://")):
        expected = "expected https://<account>.blob.core.windows.net or a storage connection string"
        parts = url_parts(raw, name, expected)
        if not parts.hostname or parts.query:
            raise ConfigError(name, expected)
        connection_string, account_url = None, raw
    else:
        fields = key_values(raw, name)  # never echoes the value: it holds an account key
        if not ({"accountname", "blobendpoint", "usedevelopmentstorage"} & set(fields)):
            raise ConfigError(name, "a storage connection string needs AccountName= or BlobEndpoint= "
                              "(or an https:// account URL instead)")
        connection_string, account_url = raw, None
    container = optional(env, "DTS_PAYLOAD_CONTAINER") or "durabletask-payloads"
    if not (3 <= len(container) <= 63 and container.replace("-", "").isalnum() and container == container.lower()
            and not container.startswith("-") and "--" not in container):
        raise ConfigError("DTS_PAYLOAD_CONTAINER", f"not a valid blob container name: {container[:80]!r}")
    return PayloadStorage(
        connection_string=connection_string,
        account_url=account_url,
        container=container,
        # The .NET SDK refuses a threshold over 1 MiB; DTS would refuse such a payload anyway.
        threshold_bytes=integer(env, "DTS_PAYLOAD_THRESHOLD_BYTES", 262_144, low=1024, high=DTS_PAYLOAD_BYTES),
    )


def cloudevent_types(env: Mapping[str, str]) -> dict[str, str]:
    """CLOUDEVENTS_TYPES: `type=action` pairs separated by ',' (action: start, approval or event), added to the
    default types; e.g. `com.dapr.event.sent=start` for a Dapr topic whose messages are starts."""
    name = "CLOUDEVENTS_TYPES"
    types = dict(CLOUDEVENT_TYPES)
    raw = optional(env, name)
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        event_type, sep, action = (part.strip() for part in item.partition("="))
        if not sep or not event_type:
            raise ConfigError(name, f"expected type=action pairs separated by ',', got {item.strip()!r}")
        if action not in CLOUDEVENT_TYPES.values():
            raise ConfigError(name, f"{event_type}: the action must be start, approval or event, got {action!r}")
        if event_type in CLOUDEVENT_TYPES and CLOUDEVENT_TYPES[event_type] != action:
            raise ConfigError(name, f"{event_type} always means {CLOUDEVENT_TYPES[event_type]}")
        if len(event_type) > MAX_CLOUDEVENT_ATTRIBUTE_CHARS:
            raise ConfigError(name, f"a type is at most {MAX_CLOUDEVENT_ATTRIBUTE_CHARS} characters")
        types[event_type] = action
    return types


def parse_dts(connection_string: str, *, taskhub: str = DEFAULT_TASKHUB, default_client_id: str | None = None
              ) -> DtsSettings:
    """Parse the DTS guide's format: `Endpoint=...;Authentication=None|ManagedIdentity|DefaultAzure[;ClientID=...]`."""
    var = "DTS_CONNECTION_STRING"
    fields = key_values(connection_string, var)
    unknown = sorted(set(fields) - {"endpoint", "authentication", "clientid", "taskhub"})
    if unknown:
        raise ConfigError(var, f"unknown key {unknown[0]!r} (expected Endpoint, Authentication, ClientID, TaskHub)")
    endpoint = fields.get("endpoint")
    if not endpoint:
        raise ConfigError(var, "missing Endpoint= (e.g. Endpoint=http://localhost:8080)")
    parts = url_parts(endpoint, var, f"Endpoint has an invalid port or host: {endpoint!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(var, f"Endpoint must be an http:// or https:// URL, got {endpoint!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(var, f"Endpoint must not have a path or query: {endpoint!r}")
    auth_raw = fields.get("authentication")
    if auth_raw is None:
        raise ConfigError(var, "missing Authentication= (None, ManagedIdentity or DefaultAzure)")
    auth = _auth(auth_raw, var, allowed=(Auth.NONE, Auth.MANAGED_IDENTITY, Auth.DEFAULT_AZURE))
    if auth is Auth.NONE and parts.scheme == "https" and not is_loopback(parts.hostname):
        raise ConfigError(var, "Authentication=None is only for a local emulator; use ManagedIdentity or DefaultAzure")
    # A task hub in the string wins over TASKHUB_NAME: the string is what the portal hands out.
    hub = fields.get("taskhub") or taskhub
    client_id = fields.get("clientid") or default_client_id
    return DtsSettings(
        endpoint=f"{parts.scheme}://{parts.netloc}",
        taskhub=hub,
        auth=auth,
        client_id=client_id if auth is Auth.MANAGED_IDENTITY else None,
    )


def _source(env: Mapping[str, str]) -> Source:
    """SERVICEBUS_QUEUE, or SERVICEBUS_TOPIC + SERVICEBUS_SUBSCRIPTION: exactly one form (the queue by default);
    SERVICEBUS_SESSIONS says whether its entities require sessions."""
    sessions = boolean(env, "SERVICEBUS_SESSIONS", False)
    queue, topic, subscription, retry = (optional(env, name) for name in (
        "SERVICEBUS_QUEUE", "SERVICEBUS_TOPIC", "SERVICEBUS_SUBSCRIPTION", "SERVICEBUS_RETRY_QUEUE"))
    if queue and (topic or subscription):
        raise ConfigError("SERVICEBUS_QUEUE", "set either SERVICEBUS_QUEUE or SERVICEBUS_TOPIC + "
                          "SERVICEBUS_SUBSCRIPTION, not both")
    if bool(topic) != bool(subscription):
        missing, given = (("SERVICEBUS_SUBSCRIPTION", "SERVICEBUS_TOPIC") if topic
                          else ("SERVICEBUS_TOPIC", "SERVICEBUS_SUBSCRIPTION"))
        raise ConfigError(missing, f"required with {given} (the topic form needs both)")
    if not topic:
        if retry:
            raise ConfigError("SERVICEBUS_RETRY_QUEUE", "only used with SERVICEBUS_TOPIC + SERVICEBUS_SUBSCRIPTION "
                              "(a queue retries on itself)")
        queue = queue or (DEFAULT_SESSION_QUEUE if sessions else DEFAULT_QUEUE)
        _check_name("SERVICEBUS_QUEUE", queue, "queue")
        return queue_source(queue, sessions=sessions)
    assert subscription is not None
    _check_name("SERVICEBUS_TOPIC", topic, "topic")
    _check_name("SERVICEBUS_SUBSCRIPTION", subscription, "subscription", longest=MAX_SUBSCRIPTION)
    source = topic_source(topic, subscription, retry, sessions=sessions)
    _check_name("SERVICEBUS_RETRY_QUEUE", source.retry_queue, "queue")
    if source.retry_queue == topic:
        raise ConfigError("SERVICEBUS_RETRY_QUEUE", "must be a queue of its own, not the topic")
    return source


def _check_name(var: str, name: str, kind: str, *, longest: int | None = None) -> None:
    problem = name_problem(name) if longest is None else name_problem(name, longest=longest)
    if problem is None and kind == "subscription" and "/" in name:
        problem = "contains '/'"
    if problem is not None:
        raise ConfigError(var, f"not a valid {kind} name ({problem}): {name[:80]!r}")


def _servicebus(env: Mapping[str, str], client_id: str | None) -> ServiceBusSettings:
    source = _source(env)
    namespace = optional(env, "SERVICEBUS_NAMESPACE")
    conn = optional(env, "SERVICEBUS_CONNECTION_STRING")
    auth_raw = optional(env, "SERVICEBUS_AUTHENTICATION")
    if namespace and conn:
        raise ConfigError(
            "SERVICEBUS_NAMESPACE",
            "set either SERVICEBUS_NAMESPACE (Entra ID) or SERVICEBUS_CONNECTION_STRING, not both",
        )
    if namespace:
        ns = _namespace(namespace)
        if auth_raw:
            auth = _auth(auth_raw, "SERVICEBUS_AUTHENTICATION", allowed=(Auth.MANAGED_IDENTITY, Auth.DEFAULT_AZURE))
        else:
            auth = Auth.MANAGED_IDENTITY if client_id else Auth.DEFAULT_AZURE
        return ServiceBusSettings(source, EntraId(ns, auth, client_id if auth is Auth.MANAGED_IDENTITY else None))
    if auth_raw and _auth(auth_raw, "SERVICEBUS_AUTHENTICATION", allowed=tuple(Auth)) is not Auth.CONNECTION_STRING:
        raise ConfigError("SERVICEBUS_AUTHENTICATION", f"{auth_raw} needs SERVICEBUS_NAMESPACE to be set")
    conn = conn or DEFAULT_SERVICEBUS_CONNECTION_STRING
    fields = key_values(conn, "SERVICEBUS_CONNECTION_STRING")
    endpoint = fields.get("endpoint", "")
    problem = "missing or invalid Endpoint=sb://<host>[:port]"
    if not endpoint.lower().startswith("sb://") or \
            not url_parts(endpoint, "SERVICEBUS_CONNECTION_STRING", problem).hostname:
        raise ConfigError("SERVICEBUS_CONNECTION_STRING", problem)
    _sas_fields(conn)  # the SDK's own rules for keys and signatures
    return ServiceBusSettings(source, ConnectionString(conn))


def _namespace(value: str) -> str:
    host = value.strip()
    if "://" in host:
        parts = url_parts(host, "SERVICEBUS_NAMESPACE", f"expected <name>.servicebus.windows.net, got {value!r}")
        host = parts.hostname or ""
        port = parts.port if is_loopback(host) else None
        host = f"{host}:{port}" if port else host
    host = host.rstrip("/")
    if not host or any(c in host for c in " /;=?#"):
        raise ConfigError("SERVICEBUS_NAMESPACE", f"expected <name>.servicebus.windows.net, got {value!r}")
    if is_local_namespace(host):
        return host  # a local broker (localbus or the emulator) with Entra ID tokens, e.g. in tests
    if ":" in host:
        raise ConfigError("SERVICEBUS_NAMESPACE", f"a namespace takes no port, got {value!r}")
    if "." not in host:
        host = f"{host}.servicebus.windows.net"
    return host


def is_local_namespace(namespace: str) -> bool:
    """localhost[:port] has no TLS (emulator, localbus); every Azure namespace does."""
    return is_loopback(namespace.rsplit(":", 1)[0] if namespace.count(":") == 1 else namespace)


@dataclass(frozen=True)
class SasFields:
    """What azure-servicebus's `parse_connection_string` reads from a connection string, as far as we use it."""

    fully_qualified_namespace: str
    shared_access_key: str | None
    shared_access_signature: str | None


def _sas_fields(conn: str) -> SasFields:
    """The SDK's rules: whatever its parser accepts, the clients accept. Its messages never echo a key.

    The usual string is read here as the SDK reads it (`_plain_sas_fields`), without importing azure.servicebus:
    that import is about 0.13 s of every command, and only the commands that talk to Service Bus need it. Every
    other string goes to the SDK's parser, for its verdict and its message."""
    plain = _plain_sas_fields(conn)
    if plain is not None:
        return plain
    from azure.servicebus import parse_connection_string

    try:
        parsed = parse_connection_string(conn)
    except ValueError as error:
        raise ConfigError("SERVICEBUS_CONNECTION_STRING", f"{str(error).rstrip('.')} (expected Endpoint=sb://HOST;"
                                                          "SharedAccessKeyName=...;SharedAccessKey=...)") from None
    return SasFields(parsed.fully_qualified_namespace, parsed.shared_access_key, parsed.shared_access_signature)


# The keys of a SAS connection string, spelled as the SDK's parser looks them up (it matches case).
_SAS_KEYS = frozenset({"Endpoint", "SharedAccessKeyName", "SharedAccessKey", "SharedAccessSignature", "EntityPath",
                       "UseDevelopmentEmulator"})


def _plain_sas_fields(conn: str) -> SasFields | None:
    """The fields of a string the SDK's parser surely accepts, split as it splits them; None for any other string.

    Accepted: `Key=Value` parts separated by ';' with keys of `_SAS_KEYS` only (the last of a repeated key counts,
    as for the SDK), an Endpoint with a host, and either a key name and a key or a signature, non-empty. A unit
    test holds this to the SDK's own results."""
    parts = [part.split("=", 1) for part in conn.strip().rstrip(";").split(";")]
    if any(len(part) != 2 for part in parts):
        return None
    values = dict(parts)
    if not values.keys() <= _SAS_KEYS:
        return None
    try:
        host = urlsplit(values.get("Endpoint", "")).netloc.strip()
    except ValueError:  # e.g. an unclosed '[': the SDK's parser says what is wrong
        return None
    key_name, key, signature = (values.get(k) for k in ("SharedAccessKeyName", "SharedAccessKey",
                                                         "SharedAccessSignature"))
    by_key = bool(key_name and key) and signature is None
    by_signature = bool(signature) and key_name is None and key is None
    if not host or not (by_key or by_signature):
        return None
    return SasFields(host, key, signature)


def key_values(value: str, var: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            # Never echo the part: it may be a key.
            raise ConfigError(var, "expected Key=Value pairs separated by ';'")
        fields[key.strip().lower()] = val.strip()
    if not fields:
        raise ConfigError(var, "is empty")
    return fields


def parse_auth(raw: str, var: str, *, allowed: tuple[Auth, ...]) -> Auth:
    """One of `allowed`, named case-insensitively, or ConfigError naming `var`."""
    return _auth(raw, var, allowed=allowed)


def _auth(raw: str, var: str, *, allowed: tuple[Auth, ...]) -> Auth:
    for auth in allowed:
        if raw.strip().lower() == auth.value.lower():
            return auth
    names = ", ".join(a.value for a in allowed)
    raise ConfigError(var, f"unsupported authentication {raw.strip()!r} (expected one of: {names})")


def _taskhub(env: Mapping[str, str]) -> str:
    return check_taskhub(optional(env, "TASKHUB_NAME") or DEFAULT_TASKHUB, "TASKHUB_NAME")


def check_taskhub(hub: str, setting: str) -> str:
    """A task hub name as DTS takes it, or ConfigError naming `setting`."""
    if not hub or len(hub) > 64 or not all(c.isalnum() or c in "-_" for c in hub):
        raise ConfigError(setting, f"use letters, digits, '-' or '_' (max 64), got {hub!r}")
    return hub


def event_loop(env: Mapping[str, str]) -> str:
    """EVENT_LOOP: `auto` (the default) is uvloop where it is installed (it is a dependency wherever it builds:
    CPython on Linux and macOS), asyncio's own loop elsewhere; `uvloop` insists on it, `asyncio` turns it off."""
    choice = (optional(env, "EVENT_LOOP") or "auto").lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError("EVENT_LOOP", f"expected auto, uvloop or asyncio, got {choice[:40]!r}")
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise ConfigError("EVENT_LOOP", "uvloop is not installed here (pip install uvloop, or use auto or asyncio)")
    if choice == "auto":
        return "uvloop" if installed else "asyncio"
    return choice


def _log_level(env: Mapping[str, str]) -> str:
    level = (optional(env, "LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL", f"expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return level


# The readers below are shared with sbworker/observability/config.py (the OTEL_* variables): one set of rules for
# every variable, and every error a ConfigError naming it.


def url_parts(value: str, name: str, problem: str) -> SplitResult:
    """`urlsplit`, with its port checked, and any ValueError it raises (an unclosed '[', a port out of range) a
    ConfigError for `name`: a setting that is not a URL is a configuration error, never a traceback."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        raise ConfigError(name, problem) from None
    return parts


def optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def integer(env: Mapping[str, str], name: str, default: int, *, low: int, high: int, hint: str = "") -> int:
    raw = optional(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}{hint}, got {value}")
    return value


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = optional(env, name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise ConfigError(name, f"expected true or false, got {raw[:40]!r}")
    return raw.lower() == "true"


def number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    raw = optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number of seconds, got {raw!r}") from None
    if not low <= value <= high:  # also rejects nan
        raise ConfigError(name, f"must be between {low:g} and {high:g}, got {raw}")
    return value

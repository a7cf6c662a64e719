"""The deployment files agree with each other and with the code, in both forms of what the worker reads.

- queue form: one queue, with the same name and settings, in the emulator Config.json, the Bicep and the code
  default;
- topic form: the topic, the worker's subscription and its retry queue, with the same names and settings in
  Config.json, the Bicep, docker-compose.topic.yml and the code's defaults; the emulator config also has a
  second subscription (`audit`), standing in for another team's consumer;
- every environment variable the code reads (ENV_VARS: the core's and observability's) is set for the worker in
  docker-compose.yml and in the container app, in each form, unless it belongs to the other form or is listed
  below with the reason it must not be;
- what each target sets is a configuration the code accepts, with the authentication that target needs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sbworker.core import config
from sbworker.core.entities import default_retry_queue
from sbworker.observability import config as observability_config
from tests.deploy import deployfiles as df

# Every variable the service reads: the core settings' and observability's.
ENV_VARS = config.ENV_VARS + observability_config.ENV_VARS

# The topic form's entities. Config.json, the Bicep, docker-compose.topic.yml and the code's defaults
# (sbworker.core.config.DEFAULT_TOPIC and DEFAULT_SUBSCRIPTION, and the retry queue it derives) are checked against
# them.
TOPIC = "workflow-events"
SUBSCRIPTION = "sbworker"
RETRY_QUEUE = f"{TOPIC}-{SUBSCRIPTION}-retry"  # the code's default: <topic>-<subscription>-retry
OTHER_SUBSCRIPTION = "audit"  # another consumer of the topic; local only, it shows retries never reach it
# Session mode's entities (SERVICEBUS_SESSIONS; the Bicep's requiresSession): a queue, a subscription (locally
# with a rule that takes only messages with a session id, as the plain subscription beside it takes every message)
# and that subscription's retry queue, under names of their own (Service Bus cannot switch an entity over).
SESSION_QUEUE = "workflow-requests-sessions"
SESSION_SUBSCRIPTION = "sbworker-sessions"
SESSION_RETRY_QUEUE = f"{TOPIC}-{SESSION_SUBSCRIPTION}-retry"

# The variables of each form; a target sets exactly one form's (the code refuses a mix).
SOURCE_VARS: dict[str, tuple[str, ...]] = {
    "queue": ("SERVICEBUS_QUEUE",),
    "topic": ("SERVICEBUS_TOPIC", "SERVICEBUS_SUBSCRIPTION", "SERVICEBUS_RETRY_QUEUE"),
}
ALL_SOURCE_VARS = {name for names in SOURCE_VARS.values() for name in names}

# Variables deliberately absent from one target. Each needs a reason; a stale entry fails the test.
COMPOSE_EXEMPT: dict[str, str] = {
    "SERVICEBUS_NAMESPACE": "the emulator is reached with a SAS connection string; setting both is a config error",
    "AZURE_CLIENT_ID": "no managed identity exists locally: both emulators are unauthenticated or use SAS",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "there is no Application Insights locally: traces go to the OTLP viewer",
    "APPLICATIONINSIGHTS_AUTHENTICATION": "there is no Application Insights locally, so nothing to sign in to",
    "CLOUDEVENTS_TYPES": "optional: only publishers with CloudEvents types of their own (e.g. Dapr's) need a mapping",
    "EVENT_LOOP": "optional: its default (auto) picks uvloop, which the image installs",
}
CONTAINER_APP_EXEMPT: dict[str, str] = {
    "SERVICEBUS_CONNECTION_STRING": "Azure uses Entra ID (managed identity); the namespace has local/SAS auth disabled",
    "CLOUDEVENTS_TYPES": "optional: only publishers with CloudEvents types of their own (e.g. Dapr's) need a mapping",
    "EVENT_LOOP": "optional: its default (auto) picks uvloop, which the image installs",
}

# Sample values for Bicep expressions that are only known at deploy time.
BICEP_SAMPLES = {
    "dtsEndpoint": "https://dts-sample.westus2.durabletask.io",
    "workerClientId": "00000000-0000-0000-0000-000000000001",
    "serviceBusNamespaceFqdn": "sb-sample.servicebus.windows.net",
    "taskHubName": "default",
}

# What a secret of the container app holds at deploy time.
SECRET_SAMPLES = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000002;"
                                             "IngestionEndpoint=https://westus2-2.in.applicationinsights.azure.com/",
}

# Config.json property → Bicep property, for a queue (the worker's queue and the retry queue), a subscription and
# a topic.
QUEUE_PROPERTIES = {
    "LockDuration": "lockDuration",
    "MaxDeliveryCount": "maxDeliveryCount",
    "DefaultMessageTimeToLive": "defaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration": "deadLetteringOnMessageExpiration",
    "RequiresDuplicateDetection": "requiresDuplicateDetection",
    "RequiresSession": "requiresSession",
}
SUBSCRIPTION_PROPERTIES = {k: v for k, v in QUEUE_PROPERTIES.items() if k != "RequiresDuplicateDetection"}
TOPIC_PROPERTIES = {
    "DefaultMessageTimeToLive": "defaultMessageTimeToLive",
    "RequiresDuplicateDetection": "requiresDuplicateDetection",
}


def _source(settings: Any) -> tuple[str | None, str, str]:
    """(topic or None, queue or subscription, retry queue) of loaded settings."""
    source = settings.servicebus.source
    return source.entity.topic, source.entity.name, source.retry_queue


# --- readers ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emulator_namespace() -> dict:
    doc = json.loads(df.EMULATOR_CONFIG.read_text(encoding="utf-8"))
    [namespace] = doc["UserConfig"]["Namespaces"]
    return namespace


@pytest.fixture(scope="module")
def emulator_queues(emulator_namespace: dict) -> dict[str, dict]:
    return {q["Name"]: q for q in emulator_namespace.get("Queues", [])}


@pytest.fixture(scope="module")
def emulator_topics(emulator_namespace: dict) -> dict[str, dict]:
    return {t["Name"]: t for t in emulator_namespace.get("Topics", [])}


@pytest.fixture(scope="module")
def emulator_queue(emulator_queues: dict[str, dict]) -> dict:
    assert config.DEFAULT_QUEUE in emulator_queues, (
        f"{config.DEFAULT_QUEUE!r} (sbworker.core.config.DEFAULT_QUEUE) is not a queue in Config.json")
    return emulator_queues[config.DEFAULT_QUEUE]


@pytest.fixture(scope="module")
def emulator_subscriptions(emulator_topics: dict[str, dict]) -> dict[str, dict]:
    assert TOPIC in emulator_topics, f"topic {TOPIC!r} is not in Config.json"
    return {s["Name"]: s for s in emulator_topics[TOPIC].get("Subscriptions", [])}


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    return df.compose_worker_environment("queue")


@pytest.fixture(scope="module")
def compose_topic_env() -> dict[str, str]:
    return df.compose_worker_environment("topic")


@pytest.fixture(scope="module")
def app_env() -> dict[str, str]:
    return df.container_env(df.read_bicep(df.CONTAINERAPP_BICEP), "queue")


@pytest.fixture(scope="module")
def app_topic_env() -> dict[str, str]:
    return df.container_env(df.read_bicep(df.CONTAINERAPP_BICEP), "topic")


def _evaluate(expression: str, params: dict, variables: dict[str, str], samples: dict[str, str]) -> str:
    """Evaluate the few Bicep expression forms the env array uses, with samples for deploy-time values."""
    expression = expression.strip()
    choice = re.fullmatch(r"(\w+)\s*\?\s*('[^']*')\s*:\s*('[^']*')", expression)
    if choice and isinstance(params.get(choice.group(1)), bool):  # `flag ? 'a' : 'b'` on a bool parameter
        return _evaluate(choice.group(2) if params[choice.group(1)] else choice.group(3), params, variables, samples)
    if expression.startswith("'"):
        return re.sub(r"\$\{(\w+)\}", lambda m: _evaluate(m.group(1), params, variables, samples), expression[1:-1])
    call = re.fullmatch(r"string\((\w+)\)", expression)
    if call:
        return _evaluate(call.group(1), params, variables, samples)
    if expression in samples:
        return samples[expression]
    if re.fullmatch(r"\d+", expression):
        return expression
    if expression in variables:
        return _evaluate(variables[expression], params, variables, samples)
    if params.get(expression) is not None:
        return str(params[expression])
    raise AssertionError(f"cannot evaluate {expression!r}: add a sample to BICEP_SAMPLES")


def _main_param(name: str, *, sessions: bool = False) -> str:
    """A main.bicep parameter's default, evaluated with requiresSession as given (a default may be built from the
    parameters declared before it)."""
    text = df.read_bicep(df.MAIN_BICEP)
    params = {**df.params(text), "requiresSession": sessions}
    for declared, raw in re.findall(r"^param\s+(\w+)\s+string\s*=\s*(.+)$", text, re.MULTILINE):
        if params.get(declared) is None:
            params[declared] = _evaluate(raw, params, {}, {})
    assert params.get(name) is not None, f"main.bicep: param {name} has no default"
    return str(params[name])


def _app_env_values(raw_env: dict[str, str], *, sessions: bool = False) -> dict[str, str]:
    """The container app's env as deployed by main.bicep with its defaults (names from main, samples for the rest),
    in session mode with `sessions`."""
    text = df.read_bicep(df.CONTAINERAPP_BICEP)
    samples = dict(BICEP_SAMPLES)
    for name in ("queueName", "topicName", "subscriptionName", "retryQueueName"):
        samples[name] = _main_param(name, sessions=sessions)
    params, variables = {**df.params(text), "requiresSession": sessions}, df.variables(text)
    return {name: SECRET_SAMPLES[name] if raw.startswith(df.SECRET_REF)
            else _evaluate(raw, params, variables, samples)
            for name, raw in raw_env.items()}


@pytest.fixture(scope="module")
def app_env_values(app_env: dict[str, str]) -> dict[str, str]:
    return _app_env_values(app_env)


@pytest.fixture(scope="module")
def app_topic_env_values(app_topic_env: dict[str, str]) -> dict[str, str]:
    return _app_env_values(app_topic_env)


def _assert_settings_match(kind: str, name: str, bicep_resource: str, emulator_entity: dict,
                           properties_map: dict[str, str], *, sessions: bool = False) -> None:
    """The Bicep's settings of a resource, deployed with requiresSession = `sessions`, are the Config.json entity's."""
    _type, body = df.resource_body(df.read_bicep(df.SERVICEBUS_BICEP), bicep_resource)
    properties = df.object_property(body, "properties")
    for emulator_name, bicep_name in properties_map.items():
        expected = emulator_entity["Properties"][emulator_name]
        raw = df.object_property(properties, bicep_name)
        actual = sessions if raw == "requiresSession" else df.scalar(raw)
        if isinstance(expected, str):  # ISO-8601 durations: compare case-insensitively
            expected, actual = expected.upper(), str(actual).upper()
        assert actual == expected, f"{kind} {name} {bicep_name}: Bicep has {actual!r}, Config.json has {expected!r}"


# --- the queue ------------------------------------------------------------------------------------

def test_queue_name_agrees_everywhere(emulator_queue: dict, compose_env: dict[str, str]) -> None:
    assert _main_param("queueName") == config.DEFAULT_QUEUE == emulator_queue["Name"]
    assert compose_env["SERVICEBUS_QUEUE"] == config.DEFAULT_QUEUE


def test_queue_settings_match_emulator_config(emulator_queue: dict) -> None:
    _assert_settings_match("queue", config.DEFAULT_QUEUE, "queue", emulator_queue, QUEUE_PROPERTIES)


# --- session mode -----------------------------------------------------------------------------------

def test_session_entity_names_agree_between_config_json_bicep_and_the_code(
    emulator_queues: dict[str, dict], emulator_subscriptions: dict[str, dict]
) -> None:
    assert _main_param("queueName", sessions=True) == config.DEFAULT_SESSION_QUEUE == SESSION_QUEUE
    assert _main_param("subscriptionName", sessions=True) == config.DEFAULT_SESSION_SUBSCRIPTION == SESSION_SUBSCRIPTION
    assert _main_param("retryQueueName", sessions=True) == SESSION_RETRY_QUEUE
    assert {SESSION_QUEUE, SESSION_RETRY_QUEUE} <= set(emulator_queues)
    assert SESSION_SUBSCRIPTION in emulator_subscriptions
    # What the code reads with SERVICEBUS_SESSIONS=true alone, and with the topic form's subscription.
    assert _source(config.load({"SERVICEBUS_SESSIONS": "true"})) == (None, SESSION_QUEUE, SESSION_QUEUE)
    topic = config.load({"SERVICEBUS_SESSIONS": "true", "SERVICEBUS_TOPIC": TOPIC,
                         "SERVICEBUS_SUBSCRIPTION": SESSION_SUBSCRIPTION})
    assert _source(topic) == (TOPIC, SESSION_SUBSCRIPTION, SESSION_RETRY_QUEUE)


@pytest.mark.parametrize(("name", "resource", "where"), [
    (SESSION_QUEUE, "queue", "queues"), (SESSION_RETRY_QUEUE, "retryQueue", "queues"),
    (SESSION_SUBSCRIPTION, "workerSubscription", "subscriptions"),
])
def test_session_entity_settings_match_the_bicep_with_requires_session(
    emulator_queues: dict[str, dict], emulator_subscriptions: dict[str, dict], name: str, resource: str, where: str
) -> None:
    """The Bicep's entities, deployed with requiresSession, are Config.json's session-enabled ones; deployed without,
    its plain ones (the tests above)."""
    entity = (emulator_queues if where == "queues" else emulator_subscriptions)[name]
    assert entity["Properties"]["RequiresSession"] is True
    _assert_settings_match(where, name, resource, entity,
                           QUEUE_PROPERTIES if where == "queues" else SUBSCRIPTION_PROPERTIES, sessions=True)


@pytest.mark.parametrize("source", df.SOURCES)
def test_container_app_in_session_mode_reads_the_session_entities_with_the_code_defaults(source: str) -> None:
    raw = df.container_env(df.read_bicep(df.CONTAINERAPP_BICEP), source)
    settings = config.load(_app_env_values(raw, sessions=True))
    assert settings.servicebus.source.sessions
    expected = (None, SESSION_QUEUE, SESSION_QUEUE) if source == "queue" else (TOPIC, SESSION_SUBSCRIPTION,
                                                                               SESSION_RETRY_QUEUE)
    assert _source(settings) == expected
    defaults = config.load({}).listener
    for values in (_app_env_values(raw), df.compose_worker_environment(source)):
        listener = config.load(values).listener
        assert (listener.max_concurrent_sessions, listener.session_idle_seconds) == (
            defaults.max_concurrent_sessions, defaults.session_idle_seconds)
    assert not config.load(_app_env_values(raw)).servicebus.source.sessions


# --- the topic, its subscriptions and the retry queue ---------------------------------------------------

def test_topic_names_agree_between_config_json_bicep_and_compose(
    emulator_queues: dict[str, dict], emulator_subscriptions: dict[str, dict], compose_topic_env: dict[str, str]
) -> None:
    assert SUBSCRIPTION in emulator_subscriptions, f"subscription {SUBSCRIPTION!r} of {TOPIC!r} is not in Config.json"
    assert RETRY_QUEUE in emulator_queues, f"retry queue {RETRY_QUEUE!r} is not a queue in Config.json"
    assert _main_param("topicName") == TOPIC
    assert _main_param("subscriptionName") == SUBSCRIPTION
    assert _main_param("retryQueueName") == RETRY_QUEUE
    assert {name: compose_topic_env.get(name) for name in SOURCE_VARS["topic"]} == {
        "SERVICEBUS_TOPIC": TOPIC, "SERVICEBUS_SUBSCRIPTION": SUBSCRIPTION, "SERVICEBUS_RETRY_QUEUE": RETRY_QUEUE,
    }


def test_topic_names_agree_with_the_code_defaults() -> None:
    assert config.DEFAULT_TOPIC == TOPIC and config.DEFAULT_SUBSCRIPTION == SUBSCRIPTION
    # Without SERVICEBUS_RETRY_QUEUE the code derives the retry queue's name: it must be the one we deploy.
    assert default_retry_queue(TOPIC, SUBSCRIPTION) == RETRY_QUEUE
    settings = config.load({"SERVICEBUS_TOPIC": TOPIC, "SERVICEBUS_SUBSCRIPTION": SUBSCRIPTION})
    assert _source(settings) == (TOPIC, SUBSCRIPTION, RETRY_QUEUE)


def test_the_retry_queue_is_a_queue_of_its_own(emulator_queues: dict[str, dict],
                                               emulator_topics: dict[str, dict]) -> None:
    """Retries go to a queue only this worker reads: not the topic (every subscription would get them again),
    not the queue of the queue form."""
    assert RETRY_QUEUE not in emulator_topics
    assert RETRY_QUEUE != config.DEFAULT_QUEUE and RETRY_QUEUE != TOPIC


def test_other_subscription_stands_in_for_another_consumer(emulator_subscriptions: dict[str, dict]) -> None:
    """`audit` is a second consumer of the topic in the local emulators only: nothing deploys it."""
    assert OTHER_SUBSCRIPTION in emulator_subscriptions
    assert set(emulator_subscriptions) == {SUBSCRIPTION, OTHER_SUBSCRIPTION, SESSION_SUBSCRIPTION}
    text = df.read_bicep(df.SERVICEBUS_BICEP)
    subscriptions = [n for n, t in df.resources(text).items()
                     if t.startswith("Microsoft.ServiceBus/namespaces/topics/subscriptions@")]
    assert subscriptions == ["workerSubscription"]
    _t, body = df.resource_body(text, "workerSubscription")
    assert df.object_property(body, "name") == "subscriptionName"


@pytest.mark.parametrize("name", [SUBSCRIPTION, OTHER_SUBSCRIPTION])
def test_subscriptions_accept_every_message(emulator_subscriptions: dict[str, dict], name: str) -> None:
    """No rules: the official emulator and localbus both give the subscription the $Default rule (1=1), as Service
    Bus does for a subscription created without one (the Bicep declares no rule either)."""
    assert not emulator_subscriptions[name].get("Rules"), f"{name}: rules would filter what it receives"
    assert not [t for t in df.resources(df.read_bicep(df.SERVICEBUS_BICEP)).values() if "/rules@" in t.lower()]


def test_subscription_settings_match_emulator_config(emulator_subscriptions: dict[str, dict]) -> None:
    _assert_settings_match("subscription", SUBSCRIPTION, "workerSubscription", emulator_subscriptions[SUBSCRIPTION],
                           SUBSCRIPTION_PROPERTIES)


def test_retry_queue_settings_match_emulator_config(emulator_queues: dict[str, dict]) -> None:
    _assert_settings_match("queue", RETRY_QUEUE, "retryQueue", emulator_queues[RETRY_QUEUE], QUEUE_PROPERTIES)


def test_retry_queue_and_subscription_settle_like_the_queue(emulator_queues: dict[str, dict],
                                                           emulator_subscriptions: dict[str, dict]) -> None:
    """The worker gets the same lock, delivery count, TTL and dead-lettering whichever entity a message came from."""
    queue = emulator_queues[config.DEFAULT_QUEUE]["Properties"]
    assert emulator_queues[RETRY_QUEUE]["Properties"] == queue
    subscription = emulator_subscriptions[SUBSCRIPTION]["Properties"]
    assert {k: subscription[k] for k in SUBSCRIPTION_PROPERTIES} == {k: queue[k] for k in SUBSCRIPTION_PROPERTIES}


def test_topic_settings_match_emulator_config(emulator_topics: dict[str, dict]) -> None:
    _assert_settings_match("topic", TOPIC, "topic", emulator_topics[TOPIC], TOPIC_PROPERTIES)


# What the official emulator accepts (its Config-schema.json in Azure/azure-service-bus-emulator-installer):
# one namespace named sbemulatorns, at most 50 queues + topics, names starting and ending alphanumeric, a
# subscription name of at most 50 characters, max delivery count 1-10, TTL 5 min-1 h, lock up to 5 min (at least
# 5 s on a queue, 1 min on a subscription).
EMULATOR_NAME = re.compile(r"^[A-Za-z0-9]$|^[A-Za-z0-9][\w./-]*[A-Za-z0-9]$")


def _within_emulator_limits(where: str, properties: dict, shortest_lock: float) -> None:
    from localbus.config import parse_duration

    assert 1 <= properties["MaxDeliveryCount"] <= 10, where
    assert 300 <= parse_duration(properties["DefaultMessageTimeToLive"]) <= 3600, where
    assert shortest_lock <= parse_duration(properties["LockDuration"]) <= 300, where


def test_config_json_stays_within_the_emulator_limits(emulator_namespace: dict) -> None:
    assert emulator_namespace["Name"] == "sbemulatorns"
    queues, topics = emulator_namespace.get("Queues", []), emulator_namespace.get("Topics", [])
    assert len(queues) + len(topics) <= 50
    for entity in queues + topics:
        assert EMULATOR_NAME.match(entity["Name"]), entity["Name"]
    for queue in queues:
        _within_emulator_limits(f"queue {queue['Name']}", queue["Properties"], shortest_lock=5)
    for topic in topics:
        subscriptions = topic.get("Subscriptions", [])
        assert 1 <= len(subscriptions) <= 50, "the emulator needs one to 50 subscriptions per topic"
        for subscription in subscriptions:
            name = subscription["Name"]
            assert EMULATOR_NAME.match(name) and len(name) <= 50, name
            _within_emulator_limits(f"subscription {name}", subscription["Properties"], shortest_lock=60)


def test_localbus_loads_every_entity() -> None:
    """localbus (`sbworker dev`) reads the same file: the queues, the topic and its subscriptions."""
    from localbus.config import load_config
    from localbus.topics import load_topics

    queues = load_config(df.EMULATOR_CONFIG)
    assert set(queues) == {config.DEFAULT_QUEUE, RETRY_QUEUE, SESSION_QUEUE, SESSION_RETRY_QUEUE}
    assert {name for name, settings in queues.items() if settings.requires_session} == {
        SESSION_QUEUE, SESSION_RETRY_QUEUE}
    topics = load_topics(df.EMULATOR_CONFIG)
    assert set(topics) == {TOPIC}
    assert set(topics[TOPIC].subscriptions) == {SUBSCRIPTION, OTHER_SUBSCRIPTION, SESSION_SUBSCRIPTION}
    for name, subscription in topics[TOPIC].subscriptions.items():
        rules = ["with-session-id"] if name == SESSION_SUBSCRIPTION else ["$Default"]
        assert [rule.name for rule in subscription.rules] == rules
        assert subscription.settings.requires_session == (name == SESSION_SUBSCRIPTION)


# --- environment variables ------------------------------------------------------------------------

TARGETS = [
    ("compose", "queue", COMPOSE_EXEMPT),
    ("compose", "topic", COMPOSE_EXEMPT),
    ("container app", "queue", CONTAINER_APP_EXEMPT),
    ("container app", "topic", CONTAINER_APP_EXEMPT),
]


@pytest.mark.parametrize(("target", "source", "exempt"), TARGETS)
def test_every_variable_the_code_reads_is_set(
    target: str, source: str, exempt: dict[str, str], compose_env: dict[str, str], compose_topic_env: dict[str, str],
    app_env: dict[str, str], app_topic_env: dict[str, str],
) -> None:
    env = {("compose", "queue"): compose_env, ("compose", "topic"): compose_topic_env,
           ("container app", "queue"): app_env, ("container app", "topic"): app_topic_env}[(target, source)]
    where = f"{target} ({source} form)"
    other_form = ALL_SOURCE_VARS - set(SOURCE_VARS[source])
    stale = sorted(set(exempt) - set(ENV_VARS))
    assert not stale, f"{where}: exemptions for variables the code no longer reads: {stale}"
    missing = [v for v in ENV_VARS if v not in env and v not in exempt and v not in other_form]
    missing += [v for v in SOURCE_VARS[source] if not env.get(v)]
    assert not missing, f"{where} does not set {missing} (set them, or exempt them here with a reason)"
    both = sorted(set(exempt) & set(env))
    assert not both, f"{where} sets exempted variables {both}"
    mixed = sorted(v for v in other_form if env.get(v, "").strip())
    assert not mixed, f"{where} sets the other form's {mixed}: the code accepts exactly one form"
    if target == "container app":
        assert not other_form & set(env), f"{where} lists the other form's variables"
    unknown = sorted(set(env) - set(ENV_VARS) - set(observability_config.OTEL_ENV_VARS) - ALL_SOURCE_VARS)
    assert not unknown, f"{where} sets variables the code never reads: {unknown} (typo?)"
    # An empty value means unset; only the compose override uses that, to clear the base file's queue.
    empty = sorted(name for name, value in env.items() if not str(value).strip() and name not in other_form)
    assert not empty, f"{where} sets empty values for {empty}"


def test_compose_settings_load_with_connection_string_auth(compose_env: dict[str, str]) -> None:
    settings = config.load(compose_env)
    assert isinstance(settings.servicebus.access, config.ConnectionString)
    assert _source(settings) == (None, config.DEFAULT_QUEUE, config.DEFAULT_QUEUE)
    assert settings.dts.auth is config.Auth.NONE
    # Inside the compose network the emulators are reached by service name, not localhost.
    assert settings.dts.endpoint == "http://dts-emulator:8080"
    assert "sb://servicebus-emulator" in settings.servicebus.access.connection_string
    assert settings.listener.health_port == 8000


def test_compose_topic_form_loads_as_the_topic_subscription(compose_topic_env: dict[str, str]) -> None:
    settings = config.load(compose_topic_env)
    assert isinstance(settings.servicebus.access, config.ConnectionString)
    assert _source(settings) == (TOPIC, SUBSCRIPTION, RETRY_QUEUE)
    # The override changes what the worker reads and nothing else.
    assert config.load(df.compose_worker_environment("queue")).dts == settings.dts


def test_compose_topic_override_only_changes_what_the_worker_reads() -> None:
    text = df.COMPOSE_TOPIC_FILE.read_text(encoding="utf-8")
    assert set(df.compose_environment(text, "worker")) == ALL_SOURCE_VARS
    worker = [line.strip() for _n, line in df.compose_service_block(text, "worker")]
    assert worker[0] == "environment:", "the override sets the worker's environment only"
    services = re.findall(r"^  (\S+):\s*$", text, re.MULTILINE)
    assert services == ["worker"], f"the override touches only the worker, not {services}"
    assert re.search(r"docker compose -f docker-compose\.yml -f docker-compose\.topic\.yml up", text)


def test_container_app_settings_load_with_managed_identity(app_env_values: dict[str, str]) -> None:
    settings = config.load(app_env_values)
    assert settings.servicebus.access == config.EntraId(BICEP_SAMPLES["serviceBusNamespaceFqdn"],
                                                        config.Auth.MANAGED_IDENTITY, BICEP_SAMPLES["workerClientId"])
    assert settings.dts.auth is config.Auth.MANAGED_IDENTITY
    assert settings.dts.secure
    assert settings.dts.client_id == BICEP_SAMPLES["workerClientId"]
    assert _source(settings) == (None, config.DEFAULT_QUEUE, config.DEFAULT_QUEUE)
    telemetry = observability_config.load(app_env_values)
    assert telemetry.tracing and telemetry.azure_monitor_connection_string
    # Application Insights takes Entra ID only (monitoring.bicep): the exporters sign in as the worker identity.
    assert telemetry.azure_monitor_auth is config.Auth.MANAGED_IDENTITY
    assert telemetry.azure_monitor_client_id == BICEP_SAMPLES["workerClientId"]


def test_container_app_topic_form_sets_the_deployed_entities(app_topic_env_values: dict[str, str]) -> None:
    assert {name: app_topic_env_values[name] for name in SOURCE_VARS["topic"]} == {
        "SERVICEBUS_TOPIC": TOPIC, "SERVICEBUS_SUBSCRIPTION": SUBSCRIPTION, "SERVICEBUS_RETRY_QUEUE": RETRY_QUEUE,
    }


def test_container_app_topic_form_loads_with_managed_identity(app_topic_env_values: dict[str, str],
                                                              app_env_values: dict[str, str]) -> None:
    settings = config.load(app_topic_env_values)
    access = settings.servicebus.access
    assert isinstance(access, config.EntraId) and access.auth is config.Auth.MANAGED_IDENTITY
    assert access.namespace == BICEP_SAMPLES["serviceBusNamespaceFqdn"]
    assert _source(settings) == (TOPIC, SUBSCRIPTION, RETRY_QUEUE)
    # Apart from what the worker reads, both forms deploy the same environment.
    common = set(app_env_values) - ALL_SOURCE_VARS
    assert common == set(app_topic_env_values) - ALL_SOURCE_VARS
    assert all(app_env_values[name] == app_topic_env_values[name] for name in common)


def test_compose_worker_exports_to_the_trace_viewer(compose_env: dict[str, str]) -> None:
    """The worker's OTLP endpoint is the viewer's OTLP/HTTP port, by its compose service name."""
    settings = observability_config.load(compose_env)
    assert settings.tracing and settings.otlp_traces_endpoint == "http://trace-viewer:18890/v1/traces"
    text = df.COMPOSE_FILE.read_text(encoding="utf-8")
    viewer = "\n".join(line for _indent, line in df.compose_service_block(text, "trace-viewer"))
    assert "image: mcr.microsoft.com/dotnet/aspire-dashboard:" in viewer
    assert '"127.0.0.1:4318:18890"' in viewer, "OTLP/HTTP (18890 in the container) for publishers on the host"
    worker = "\n".join(line for _indent, line in df.compose_service_block(text, "worker"))
    assert re.search(r"trace-viewer:\s*\n\s*condition: service_started", worker)


def test_health_port_agrees_with_probes_and_image(app_env_values: dict[str, str], compose_env: dict[str, str]) -> None:
    default_port = config.load({}).listener.health_port
    assert int(app_env_values["HEALTH_PORT"]) == default_port == int(compose_env["HEALTH_PORT"])
    text = df.read_bicep(df.CONTAINERAPP_BICEP)
    assert df.variables(text)["healthPort"] == str(default_port)
    for path in ("/healthz", "/readyz"):
        assert re.search(rf"path:\s*'{path}'\s*\n\s*port:\s*healthPort", text), f"no probe on {path}"
    instructions = df.dockerfile_instructions(df.DOCKERFILE.read_text(encoding="utf-8"))
    assert ("EXPOSE", str(default_port)) in instructions
    env_lines = " ".join(args for name, args in instructions if name == "ENV")
    assert f"HEALTH_PORT={default_port}" in env_lines

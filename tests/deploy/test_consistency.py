"""The deployment files agree with each other and with the code.

- one queue, with the same name and settings, in the emulator Config.json, the Bicep and the code default;
- every environment variable the code reads (listener.config.ENV_VARS) is set for the worker in
  docker-compose.yml and in the container app, unless listed below with the reason it must not be;
- what each target sets is a configuration the code accepts, with the authentication that target needs.
"""

from __future__ import annotations

import json
import re

import pytest

from listener import config
from tests.deploy import deployfiles as df

# Variables deliberately absent from one target. Each needs a reason; a stale entry fails the test.
COMPOSE_EXEMPT: dict[str, str] = {
    "SERVICEBUS_NAMESPACE": "the emulator is reached with a SAS connection string; setting both is a config error",
    "AZURE_CLIENT_ID": "no managed identity exists locally: both emulators are unauthenticated or use SAS",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "there is no Application Insights locally: traces go to the OTLP viewer",
}
CONTAINER_APP_EXEMPT: dict[str, str] = {
    "SERVICEBUS_CONNECTION_STRING": "Azure uses Entra ID (managed identity); the namespace has local/SAS auth disabled",
}

# Sample values for Bicep expressions that are only known at deploy time.
BICEP_SAMPLES = {
    "dtsEndpoint": "https://dts-sample.westus2.durabletask.io",
    "workerClientId": "00000000-0000-0000-0000-000000000001",
    "serviceBusNamespaceFqdn": "sb-sample.servicebus.windows.net",
    "taskHubName": "default",
    "queueName": config.DEFAULT_QUEUE,
}

# What a secret of the container app holds at deploy time.
SECRET_SAMPLES = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000002;"
                                             "IngestionEndpoint=https://westus2-2.in.applicationinsights.azure.com/",
}

# Config.json property → Bicep queue property.
QUEUE_PROPERTIES = {
    "LockDuration": "lockDuration",
    "MaxDeliveryCount": "maxDeliveryCount",
    "DefaultMessageTimeToLive": "defaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration": "deadLetteringOnMessageExpiration",
    "RequiresDuplicateDetection": "requiresDuplicateDetection",
    "RequiresSession": "requiresSession",
}


@pytest.fixture(scope="module")
def emulator_queue() -> dict:
    doc = json.loads(df.EMULATOR_CONFIG.read_text(encoding="utf-8"))
    queues = [q for ns in doc["UserConfig"]["Namespaces"] for q in ns.get("Queues", [])]
    matching = [q for q in queues if q["Name"] == config.DEFAULT_QUEUE]
    assert matching, f"{config.DEFAULT_QUEUE!r} (listener.config.DEFAULT_QUEUE) is not a queue in Config.json"
    return matching[0]


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    return df.compose_environment(df.COMPOSE_FILE.read_text(encoding="utf-8"), "worker")


@pytest.fixture(scope="module")
def app_env() -> dict[str, str]:
    return df.container_env(df.read_bicep(df.CONTAINERAPP_BICEP))


def _evaluate(expression: str, params: dict, variables: dict[str, str]) -> str:
    """Evaluate the few Bicep expression forms the env array uses, with samples for deploy-time values."""
    expression = expression.strip()
    if expression.startswith("'"):
        return re.sub(r"\$\{(\w+)\}", lambda m: _evaluate(m.group(1), params, variables), expression[1:-1])
    call = re.fullmatch(r"string\((\w+)\)", expression)
    if call:
        return _evaluate(call.group(1), params, variables)
    if expression in BICEP_SAMPLES:
        return BICEP_SAMPLES[expression]
    if re.fullmatch(r"\d+", expression):
        return expression
    if expression in variables:
        return _evaluate(variables[expression], params, variables)
    if params.get(expression) is not None:
        return str(params[expression])
    raise AssertionError(f"cannot evaluate {expression!r}: add a sample to BICEP_SAMPLES")


@pytest.fixture(scope="module")
def app_env_values(app_env: dict[str, str]) -> dict[str, str]:
    text = df.read_bicep(df.CONTAINERAPP_BICEP)
    params, variables = df.params(text), df.variables(text)
    return {name: SECRET_SAMPLES[name] if raw.startswith(df.SECRET_REF) else _evaluate(raw, params, variables)
            for name, raw in app_env.items()}


# --- the queue ------------------------------------------------------------------------------------

def test_queue_name_agrees_everywhere(emulator_queue: dict, compose_env: dict[str, str]) -> None:
    main = df.read_bicep(df.MAIN_BICEP)
    assert df.param_default(main, "queueName") == config.DEFAULT_QUEUE == emulator_queue["Name"]
    assert compose_env["SERVICEBUS_QUEUE"] == config.DEFAULT_QUEUE


def test_queue_settings_match_emulator_config(emulator_queue: dict) -> None:
    _type, body = df.resource_body(df.read_bicep(df.SERVICEBUS_BICEP), "queue")
    properties = df.object_property(body, "properties")
    for emulator_name, bicep_name in QUEUE_PROPERTIES.items():
        expected = emulator_queue["Properties"][emulator_name]
        actual = df.scalar(df.object_property(properties, bicep_name))
        if isinstance(expected, str):  # ISO-8601 durations: compare case-insensitively
            expected, actual = expected.upper(), str(actual).upper()
        assert actual == expected, f"queue {bicep_name}: Bicep has {actual!r}, Config.json has {expected!r}"


# --- environment variables ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("target", "exempt"), [("compose", COMPOSE_EXEMPT), ("container app", CONTAINER_APP_EXEMPT)]
)
def test_every_variable_the_code_reads_is_set(
    target: str, exempt: dict[str, str], compose_env: dict[str, str], app_env: dict[str, str]
) -> None:
    env = compose_env if target == "compose" else app_env
    stale = sorted(set(exempt) - set(config.ENV_VARS))
    assert not stale, f"{target}: exemptions for variables the code no longer reads: {stale}"
    missing = [v for v in config.ENV_VARS if v not in env and v not in exempt]
    assert not missing, f"{target} does not set {missing} (set them, or exempt them here with a reason)"
    both = sorted(set(exempt) & set(env))
    assert not both, f"{target} sets exempted variables {both}"
    unknown = sorted(set(env) - set(config.ENV_VARS) - set(config.OTEL_ENV_VARS))
    assert not unknown, f"{target} sets variables the code never reads: {unknown} (typo?)"
    empty = sorted(name for name, value in env.items() if not str(value).strip())
    assert not empty, f"{target} sets empty values for {empty}"


def test_compose_settings_load_with_connection_string_auth(compose_env: dict[str, str]) -> None:
    settings = config.load(compose_env)
    assert settings.servicebus.auth is config.Auth.CONNECTION_STRING
    assert settings.servicebus.queue == config.DEFAULT_QUEUE
    assert settings.dts.auth is config.Auth.NONE
    # Inside the compose network the emulators are reached by service name, not localhost.
    assert settings.dts.endpoint == "http://dts-emulator:8080"
    assert "sb://servicebus-emulator" in (settings.servicebus.connection_string or "")
    assert settings.listener.health_port == 8000


def test_container_app_settings_load_with_managed_identity(app_env_values: dict[str, str]) -> None:
    settings = config.load(app_env_values)
    assert settings.servicebus.auth is config.Auth.MANAGED_IDENTITY
    assert settings.servicebus.namespace == BICEP_SAMPLES["serviceBusNamespaceFqdn"]
    assert settings.servicebus.client_id == BICEP_SAMPLES["workerClientId"]
    assert settings.dts.auth is config.Auth.MANAGED_IDENTITY
    assert settings.dts.secure
    assert settings.dts.client_id == BICEP_SAMPLES["workerClientId"]
    assert settings.servicebus.queue == config.DEFAULT_QUEUE
    assert settings.telemetry.tracing and settings.telemetry.azure_monitor_connection_string


def test_compose_worker_exports_to_the_trace_viewer(compose_env: dict[str, str]) -> None:
    """The worker's OTLP endpoint is the viewer's OTLP/HTTP port, by its compose service name."""
    settings = config.load(compose_env).telemetry
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

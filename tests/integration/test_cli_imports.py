"""Each `sbworker` command loads only the SDKs it uses (README "Publish and monitor"): every command pays for its
imports at start-up, and the suites start `sbworker` often.

`--help`, an argument error and a configuration error load none of them; `contract` no Service Bus or DTS client;
`publish` and `dlq` (Service Bus) not durabletask's client or gRPC; `status` and `list` (DTS) not
azure-servicebus or the CloudEvents SDK. Each command runs in a fresh interpreter, which then lists what it
imported. No timings are asserted: these are the imports the figures in the README come from.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from localbus import LocalBus
from tests.fixtures.dts import DtsBackend
from tests.support.processes import REPO, sbworker_env

# The third-party packages worth tens of milliseconds each that a command might import.
HEAVY = ("azure", "durabletask", "cloudevents", "grpc", "google", "opentelemetry", "jsonschema", "yaml", "aiohttp")
# What sbworker.core.limits measures payloads with: the SDK's JSON converter, plain Python (no gRPC, no protobuf).
JSON_CONVERTER = {"durabletask", "durabletask.serialization"}
SERVICEBUS = ("azure.servicebus",)
DTS_CLIENT = ("durabletask.client", "durabletask.azuremanaged", "grpc")
CLOUDEVENTS = ("cloudevents",)

# Runs one command as the console script does, then prints the heavy modules it imported as the last line.
PROBE = f"""
import json, sys
from sbworker import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = {HEAVY!r}
print()
print(json.dumps({{"code": code, "modules": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}}))
"""


def probe(*args: str, env: dict[str, str]) -> tuple[int, set[str], str]:
    """(exit code, heavy modules imported, stderr) of `sbworker ARGS` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip(), result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return found["code"], set(found["modules"]), result.stderr


def loaded(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


@pytest.fixture(scope="module")
def unreachable_env() -> dict[str, str]:
    """Settings that parse, for commands that never connect."""
    return sbworker_env("Endpoint=sb://localhost:1;SharedAccessKeyName=a;SharedAccessKey=b",
                        "Endpoint=http://localhost:1;Authentication=None")


@pytest.fixture(scope="module")
def env(dts_backend: DtsBackend) -> Iterator[dict[str, str]]:
    with LocalBus(port=0) as bus:
        settings = sbworker_env(bus.connection_string, dts_backend.connection_string)
        # No telemetry exporter, whatever the caller's environment configures.
        yield {k: v for k, v in settings.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))}


def test_importing_the_command_line_loads_no_sdk(unreachable_env: dict[str, str]) -> None:
    code = f"import json, sys, sbworker.cli; print(json.dumps([m for m in sys.modules if m.split('.')[0] in {HEAVY}]))"
    result = subprocess.run([sys.executable, "-c", code], env=unreachable_env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) <= JSON_CONVERTER


@pytest.mark.parametrize("args", [["--help"], ["list", "--help"], ["publish", "start"], ["status"]])
def test_help_and_argument_errors_load_no_sdk(args: list[str], unreachable_env: dict[str, str]) -> None:
    code, modules, stderr = probe(*args, env=unreachable_env)
    assert code == (0 if "--help" in args else 2), stderr
    # `list --help` names the statuses, which come from the durabletask SDK: only that help loads it.
    allowed = JSON_CONVERTER | (loaded(modules, ("durabletask", "grpc", "google", "opentelemetry"))
                                if args[0] == "list" else set())
    assert modules <= allowed


def test_a_configuration_error_loads_no_sdk(unreachable_env: dict[str, str]) -> None:
    code, modules, stderr = probe("run", env={**unreachable_env, "MAX_CONCURRENT_MESSAGES": "0"})
    assert code == 2 and stderr.strip().splitlines() == [
        "configuration error: MAX_CONCURRENT_MESSAGES: must be between 1 and 1024, got 0"]
    assert modules <= JSON_CONVERTER


def test_contract_loads_no_client_sdk(unreachable_env: dict[str, str]) -> None:
    code, modules, stderr = probe("contract", "--asyncapi", env=unreachable_env)
    assert code == 0, stderr
    assert not loaded(modules, SERVICEBUS + DTS_CLIENT + ("azure", "opentelemetry"))


def test_publish_and_dlq_load_no_dts_client(env: dict[str, str]) -> None:
    code, modules, stderr = probe("publish", "start", "hello_cities", "--instance-id", uuid.uuid4().hex, env=env)
    assert code == 0, stderr
    assert loaded(modules, SERVICEBUS) and not loaded(modules, DTS_CLIENT)
    assert not loaded(modules, ("opentelemetry.sdk",))  # no exporter configured: no telemetry to set up
    code, modules, stderr = probe("dlq", env=env)
    assert code == 0, stderr
    assert loaded(modules, SERVICEBUS) and not loaded(modules, DTS_CLIENT + CLOUDEVENTS)


def test_status_and_list_load_no_servicebus_sdk(env: dict[str, str]) -> None:
    code, modules, stderr = probe("status", f"missing-{uuid.uuid4().hex}", env=env)
    assert code == 1 and "no instance" in stderr, stderr
    assert loaded(modules, DTS_CLIENT) and not loaded(modules, SERVICEBUS + CLOUDEVENTS)
    code, modules, stderr = probe("list", "--status", "running", "--limit", "1", env=env)
    assert code == 0, stderr
    assert loaded(modules, DTS_CLIENT) and not loaded(modules, SERVICEBUS + CLOUDEVENTS)

"""The operator CLI as people use it: real subprocesses against `sbworker run`, localbus and the DTS backend.

The first test is the README's first-run walk-through, command for command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localbus import LocalBus
from sbworker.core.entities import Entity
from tests.fixtures.dts import DtsBackend
from tests.integration.harness import QUEUE
from tests.support.processes import REPO, Process, sbworker, sbworker_env
from tests.support.state import dead_lettered, instance_shows


@pytest.fixture(scope="module")
def env(dts_backend: DtsBackend) -> Iterator[dict[str, str]]:
    """The commands' environment: a broker and DTS, no service (most tests here check a command on its own)."""
    with LocalBus(port=0, queues={QUEUE: {"LockDuration": "PT30S", "MaxDeliveryCount": 5}}) as bus:
        yield sbworker_env(bus.connection_string, dts_backend.connection_string, APPROVAL_NOT_FOUND_WINDOW_SECONDS="1")


@pytest.fixture(scope="module")
def service(env: dict[str, str]) -> Iterator[None]:
    """`sbworker run` on `env`, for the tests whose messages must be handled. Only they start it: the workers of
    `make test` take single tests, so a service every test asked for would start on every worker."""
    svc = Process(["run"], env).start()
    try:
        svc.wait_for_output("listening on queue")
        yield
    finally:
        assert svc.terminate() == 0
        svc.close()


def ok(*args: str, env: dict[str, str]) -> str:
    result = sbworker(*args, env=env)
    assert result.returncode == 0, f"sbworker {' '.join(args)} -> {result.returncode}\n{result.stderr}"
    return result.stdout


def field(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name!r} in {output!r}")


def wait_status(env: dict[str, str], instance_id: str, predicate: str, timeout: float = 30) -> dict[str, object]:
    """`sbworker status --json` once the instance shows `predicate` (awaited in this process, not by a command per
    poll)."""
    instance_shows(env, instance_id, predicate, timeout=timeout)
    status = json.loads(ok("status", instance_id, "--json", env=env))
    assert predicate in json.dumps(status), status
    return dict(status)


@pytest.mark.usefixtures("service")
def test_first_run_walkthrough(env: dict[str, str]) -> None:
    # sbworker publish start approval_workflow --input '{"item": "laptop", "amount": 1200}'
    published = sbworker("publish", "start", "approval_workflow", "--input", '{"item": "laptop", "amount": 1200}',
                         env=env)
    assert published.returncode == 0 and published.stderr == "", published.stderr  # no log line on stderr
    out = published.stdout
    instance_id = field(out, "instance_id")
    assert field(out, "message_id") == instance_id  # the instance id defaults to the message id
    # sbworker watch <id>: shows it waiting, then the result once approved
    watch = subprocess.Popen([sys.executable, "-m", "sbworker", "watch", instance_id, "--interval", "0.1"],
                             env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()
        while "awaiting_approval" not in first:
            first = watch.stdout.readline()
            assert first, "watch ended without showing the wait"
        # sbworker publish approve <id>
        approved = ok("publish", "approve", instance_id, "--approver", "ada", "--comment", "within budget", env=env)
        assert f"approval by ada sent for instance {instance_id}" in approved
        rest, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    assert "COMPLETED" in rest and 'output: "Approved"' in rest
    status = json.loads(ok("status", instance_id, "--json", env=env))
    assert status["runtime_status"] == "COMPLETED" and status["output"] == "Approved"
    assert status["custom_status"]["approver"] == "ada" and status["input"] == {"item": "laptop", "amount": 1200}
    human = ok("status", instance_id, env=env)
    assert "status:        COMPLETED" in human and '"Approved"' in human
    listing = ok("list", "--status", "completed", "--limit", "500", env=env)
    assert instance_id in listing and listing.splitlines()[0].startswith("INSTANCE")
    # One time format everywhere (ISO-8601, UTC, Z, milliseconds), as the dashboard shows it.
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso, str(status["created_at"])) and re.fullmatch(iso, str(status["last_updated_at"]))
    assert re.search(rf"created:\s+{iso}\n", human) and re.search(rf"updated:\s+{iso}", human)
    row = next(line for line in listing.splitlines() if line.startswith(instance_id))
    assert re.search(rf"  COMPLETED\s+{iso}  ", row), row


@pytest.mark.usefixtures("service")
def test_reject_and_explicit_instance_id_and_input_file(env: dict[str, str], tmp_path: Path) -> None:
    payload = tmp_path / "input.json"
    payload.write_text('{"item": "chair", "timeout_seconds": 60}')
    iid = f"cli-{uuid.uuid4().hex[:8]}"
    out = ok("publish", "start", "approval_workflow", "--input", f"@{payload}", "--instance-id", iid, env=env)
    assert field(out, "instance_id") == iid and field(out, "message_id") != iid
    wait_status(env, iid, "awaiting_approval")
    ok("publish", "approve", iid, "--reject", "--approver", "bob", env=env)
    status = wait_status(env, iid, "Rejected")
    assert status["output"] == "Rejected"


def test_status_of_missing_instance_exits_1(env: dict[str, str]) -> None:
    result = sbworker("status", "does-not-exist", env=env)
    assert result.returncode == 1 and "no instance 'does-not-exist'" in result.stderr
    result = sbworker("status", "does-not-exist", "--json", env=env)
    assert result.returncode == 1 and json.loads(result.stdout) == {"instance_id": "does-not-exist",
                                                                      "exists": False}


@pytest.mark.usefixtures("service")
def test_list_json_and_filters(env: dict[str, str]) -> None:
    out = ok("publish", "start", "hello_cities", env=env)
    iid = field(out, "instance_id")
    wait_status(env, iid, "COMPLETED")
    rows = json.loads(ok("list", "--json", "--status", "completed", "--limit", "1000", env=env))
    assert iid in [r["instance_id"] for r in rows]
    assert all(r["runtime_status"] == "COMPLETED" for r in rows)
    assert len(json.loads(ok("list", "--json", "--limit", "1", env=env))) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["publish", "start", "say_hello"], "unknown orchestration 'say_hello'; valid names: approval_workflow"),
    (["publish", "start", "hello_cities", "--input", "{nope"], "--input is not valid JSON"),
    (["publish", "start", "hello_cities", "--input", "@/no/such/file.json"], "cannot read"),
    (["publish", "start", "hello_cities", "--start-at", "tomorrow"], "not an ISO-8601 time"),
    (["publish", "start", "hello_cities", "--start-at", "2030-01-01T09:00:00"], "needs a timezone"),
    (["publish", "start", "hello_cities", "--instance-id", ""], "instance_id"),
    (["publish", "start", "hello_cities", "--instance-id", "i" * 101],
     "instance_id is 101 characters; the limit is 100 characters"),
    (["publish", "start", "workflow_with_retry", "--input", '{"retry": {"max_attempts": 100}}'],
     "$.input.retry.max_attempts: 100 is out of bounds; the limit is 1 to 10 attempts (workflow_with_retry)"),
    (["publish", "approve", "i" * 101], "instance_id is 101 characters"),
    (["publish", "start", "hello_cities", "--instance-id", "@counter@1"],
     "$.instance_id starts with '@', which the Durable Task SDKs reserve for entity ids"),
    (["publish", "approve", "@counter@1"], "starts with '@'"),
    (["publish", "approve"], "the following arguments are required: instance_id"),
    (["publish", "approve", "x", "--approver", ""], "approver"),
    (["list", "--status", "sleeping"], "invalid choice"),
    (["list", "--limit", "-3"], "expected a positive integer"),
    (["dlq", "resubmit"], "give sequence numbers or --all"),
    (["dlq", "resubmit", "1", "--all"], "give sequence numbers or --all"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_and_exit_2(env: dict[str, str], args: list[str], message: str) -> None:
    result = sbworker(*args, env=env)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("setting", "args", "message"), [
    ("MAX_INPUT_BYTES", ["publish", "start", "hello_cities", "--input", json.dumps("x" * 2000)],
     "$.input is 2,002 bytes as JSON in DTS; the limit is 1,024 bytes (MAX_INPUT_BYTES)"),
    ("MAX_EVENT_BYTES", ["publish", "approve", "x", "--comment", "c" * 2000],
     "the limit is 1,024 bytes (MAX_EVENT_BYTES)"),
])
def test_publish_refuses_what_the_settings_bound_before_sending(env: dict[str, str], setting: str, args: list[str],
                                                                message: str) -> None:
    result = sbworker(*args, env={**env, setting: "1024"})
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_configuration_gives_one_line_and_exit_2(env: dict[str, str]) -> None:
    result = sbworker("list", env={**env, "DTS_CONNECTION_STRING": "Endpoint=ftp://x;Authentication=None"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: DTS_CONNECTION_STRING: Endpoint must be an http:// or https:// URL, got 'ftp://x'"
    )


@pytest.mark.parametrize("command", [["publish", "start"], ["publish", "approve"], ["status"], ["list"], ["watch"],
                                     ["dlq"], ["dlq", "resubmit"], ["run"], ["dev"]])
def test_every_command_has_help_with_an_example(env: dict[str, str], command: list[str]) -> None:
    out = ok(*command, "--help", env=env)
    assert "example" in out


@pytest.mark.usefixtures("service")
def test_dead_letter_fix_resubmit_round_trip(env: dict[str, str]) -> None:
    iid = f"fix-{uuid.uuid4().hex[:8]}"
    # An approval for an instance that does not exist yet: after the (1 s) window it is dead-lettered.
    ok("publish", "approve", iid, "--approver", "carol", env=env)
    dead_lettered(env, Entity(QUEUE), iid)
    entries = json.loads(ok("dlq", "--json", "--peek", "100", env=env))
    entry = next((e for e in entries if iid in e["body_preview"]), None)
    assert entry is not None, entries
    assert entry["reason"] == "InstanceNotFound" and iid in entry["description"]
    human = ok("dlq", env=env)
    assert f"#{entry['sequence_number']}" in human and "InstanceNotFound" in human
    # The fix: start the instance the approval was meant for.
    ok("publish", "start", "approval_workflow", "--instance-id", iid, env=env)
    wait_status(env, iid, "awaiting_approval")
    out = ok("dlq", "resubmit", str(entry["sequence_number"]), env=env)
    assert f"resubmitted 1 message(s) to '{QUEUE}': {entry['sequence_number']}" in out
    status = wait_status(env, iid, "Approved")
    assert status["custom_status"]["approver"] == "carol"  # type: ignore[index]
    remaining = json.loads(ok("dlq", "--json", "--peek", "100", env=env))
    assert all(iid not in e["body_preview"] for e in remaining), "the dead-lettered copy was not completed"


def test_resubmit_unknown_sequence_number_exits_1(env: dict[str, str]) -> None:
    result = sbworker("dlq", "resubmit", "987654321", env=env)
    assert result.returncode == 1 and "not found in the dead-letter queue: 987654321" in result.stderr


@pytest.mark.usefixtures("service")
def test_publish_event_and_cloudevents(env: dict[str, str]) -> None:
    """`sbworker publish event` raises a declared event; `--cloudevents` (before or after KIND) sends any kind as a
    structured CloudEvent whose id is the message id."""
    invoice = field(ok("publish", "--cloudevents", "start", "invoice_payment", "--input",
                       '{"invoice": "I-CLI", "amount_cents": 500, "currency": "EUR"}', env=env), "instance_id")
    wait_status(env, invoice, "awaiting_payment")
    out = ok("publish", "event", invoice, "PaymentReceived", "--data",
             '{"amount_cents": 200, "currency": "EUR", "reference": "cli-1"}', env=env)
    assert out.startswith(f"event PaymentReceived sent for instance {invoice}\n") and "event_id" not in out
    wait_status(env, invoice, '"paid_cents": 200')
    out = ok("publish", "event", invoice, "PaymentReceived", "--cloudevents", "--data",
             '{"amount_cents": 300, "currency": "EUR", "reference": "cli-2"}', env=env)
    assert field(out, "event_id").startswith(field(out, "message_id"))
    status = wait_status(env, invoice, '"status": "Paid"')
    assert status["output"]["payments"] == ["cli-1", "cli-2"]  # type: ignore[index]


@pytest.mark.parametrize(("args", "message"), [
    (["publish", "event", "x", "Shipped"], "is not a declared event; declared: ApprovalEvent, PaymentReceived "
                                           "(UnknownEvent)"),
    (["publish", "event", "x", "PaymentReceived", "--data", '{"amount_cents": "1", "currency": "EUR",'
                                                             ' "reference": "r"}'],
     '$.data.amount_cents: expected integer, got string "1" (SchemaViolation)'),
    (["publish", "event", "x", "PaymentReceived", "--data", "{nope"], "--data is not valid JSON"),
])
def test_publish_event_refuses_what_the_listener_would_dead_letter(env: dict[str, str], args: list[str],
                                                                    message: str) -> None:
    result = sbworker(*args, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

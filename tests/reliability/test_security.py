"""Security of the running listener: a wrong SAS key is refused and reported without a retry storm, and no secret
(SAS key, token signature, connection string) ever reaches a log line, an error message or a dead letter."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from localbus import connection_string as connection_string_for
from tests.fixtures.dts import DtsBackend
from tests.reliability.common import (
    QUEUE,
    dead_letters,
    durable_bus,
    publish,
    queue_total,
    running_stack,
    start_message,
)
from tests.support.ports import free_port
from tests.support.processes import LISTENING, Process, sbworker, sbworker_env
from tests.support.wait import until

SAS_KEY = "rEliAbIlItY-" + uuid.uuid4().hex  # distinctive, so a leak cannot hide behind a common string
WRONG_KEY = "wRoNgKeY-" + uuid.uuid4().hex
REFUSED = "Service Bus refused our credentials for queue 'workflow-requests'"


def _leaks(text: str, secrets: list[str]) -> list[str]:
    found = [s[:12] + "…" for s in secrets if s and s in text]
    # Anything secret-shaped that the redaction missed: a key or signature value that is not "***".
    found += re.findall(r"SharedAccessKey=(?!\*\*\*)[^;\s'\"]{4,}", text)
    found += re.findall(r"[?&]sig=(?!\*\*\*)[^&\s'\"]{4,}", text)
    return found


def _token_secrets(bus: Any) -> list[str]:
    """The signature of every SAS token the listener presented (raw and URL-decoded)."""
    out: list[str] = []
    for audience in {aud for _type, aud in bus.tokens}:
        presented = bus.last_token(audience)
        if presented:
            match = re.search(r"sig=([^&]+)", presented[1])
            if match:
                out += [match.group(1), unquote(match.group(1))]
    return out


def test_wrong_sas_key_is_refused_reported_once_and_not_retried_in_a_storm(tmp_path: Path,
                                                                           dts_backend: DtsBackend) -> None:
    with durable_bus(tmp_path, sas_key=SAS_KEY) as bus:
        publish(bus.connection_string, [start_message("hello_cities")])  # with the right key: accepted
        wrong = connection_string_for(bus.port, key=WRONG_KEY)
        with Process(["run", "--no-worker"], sbworker_env(wrong, dts_backend.connection_string),
                     tmp_path / "listener.log", ready=LISTENING) as lp:
            lp.start(wait_ready=False)
            lp.wait_for_output(REFUSED, timeout=30)
            attempts = len(bus.tokens)
            # one publisher token, then one connection attempt by the listener (the SDK itself retries it 3 times)
            assert attempts <= 6, f"{attempts} token attempts before the refusal was reported"
            refused_at = time.monotonic()
            # The documented behaviour: stay up, report, and back off (60 s) instead of hammering the broker.
            until(lambda: time.monotonic() - refused_at > 8 or not lp.alive, timeout=15, what="8 s", interval=0.5)
            assert lp.alive, lp.output[-3000:]
            assert len(bus.tokens) - attempts <= 1, f"{len(bus.tokens) - attempts} token attempts in 8 s"
            assert lp.output.count(REFUSED) == 1
            assert "listening on queue" not in lp.output
            assert queue_total(bus) == 1, "nothing may be received with a refused key"
            assert lp.terminate(timeout=30) == 0
            out = lp.output
        assert not _leaks(out, [SAS_KEY, WRONG_KEY, wrong, *_token_secrets(bus)]), out[-3000:]


def test_no_secret_in_any_log_line_error_or_dead_letter(tmp_path: Path, dts_backend: DtsBackend,
                                                       dts_worker: Any) -> None:
    """DEBUG logging (SDK loggers included) through connection loss, DTS errors, invalid messages, SIGKILL and
    restart, then every byte the process wrote and every dead-letter description is scanned."""
    dead_dts = f"Endpoint=http://localhost:{free_port()};Authentication=None"
    with running_stack(tmp_path, dts_backend.connection_string, sas_key=SAS_KEY, LOG_LEVEL="DEBUG") as stack:
        stack.publish([start_message("hello_cities"), start_message("no_such_workflow"),
                       start_message("hello_cities", instance_id="")])
        stack.drained()
        stack.bus.stop()  # connection errors get logged, with whatever the SDK puts in them
        stack.bus.start()
        stack.listener.wait_for_output("listening on queue", timeout=60)
        stack.listener.kill9()
        stack.listener.env["DTS_CONNECTION_STRING"] = dead_dts  # DTS errors get logged too
        stack.listener.start()
        stack.publish([start_message("hello_cities")])
        stack.listener.wait_for_output("DTS call failed", timeout=30)
        out = stack.listener.output
        secrets = [SAS_KEY, stack.connection_string, *_token_secrets(stack.bus)]
        descriptions = " ".join(d.description or "" for d in dead_letters(stack.connection_string))
    assert len(out) > 10_000, "DEBUG logging should have produced plenty to scan"
    assert not _leaks(out, secrets), [line for line in out.splitlines() if _leaks(line, secrets)][:5]
    assert not _leaks(descriptions, secrets)


def test_configuration_errors_never_echo_the_key() -> None:
    base = {"DTS_CONNECTION_STRING": "Endpoint=http://localhost:1;Authentication=None", "HEALTH_PORT": "0"}
    bad = [
        f"Endpoint=sb://localhost:1;SharedAccessKeyName=k;{SAS_KEY}",  # a part without '='
        f"SharedAccessKeyName=k;SharedAccessKey={SAS_KEY}",  # no endpoint
        f"Endpoint=http://nope;SharedAccessKeyName=k;SharedAccessKey={SAS_KEY}",  # wrong scheme
    ]
    for connection in bad:
        env = sbworker_env(connection, base["DTS_CONNECTION_STRING"])
        done = sbworker("run", "--no-worker", env=env)
        assert done.returncode == 2, done.stderr
        assert "SERVICEBUS_CONNECTION_STRING" in done.stderr
        assert SAS_KEY not in done.stderr + done.stdout, done.stderr


def test_dead_letter_descriptions_do_not_echo_the_connection_string(tmp_path: Path, dts_backend: DtsBackend) -> None:
    with running_stack(tmp_path, dts_backend.connection_string, sas_key=SAS_KEY) as stack:
        publish(stack.connection_string, [start_message("no_such_workflow", input={"k": QUEUE})])
        stack.drained()
        [dead] = dead_letters(stack.connection_string)
        assert dead.reason and dead.description
        assert not _leaks(dead.description, [SAS_KEY, stack.connection_string])

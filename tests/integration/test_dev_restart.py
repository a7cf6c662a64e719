"""`kill -9` of the whole `sbworker dev` with orchestrations in flight: restarted on the same data, every instance
completes once with its expected output, and a pending approval survives two such kills."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from durabletask.history import ExecutionCompletedEvent, ExecutionStartedEvent

from sbworker.core import clients
from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.config import parse_dts
from sbworker.operations.publish import approval_message, start_message
from tests.support.ports import free_port
from tests.support.processes import Process, sbworker_env
from tests.support.wait import until

pytestmark = pytest.mark.slow

GREETINGS = "Hello Tokyo!, Hello Seattle!, Hello London!"
WORKLOAD: dict[str, tuple[Any, Any]] = {  # name -> (input, expected output)
    "hello_cities": (None, GREETINGS),
    "fan_out_fan_in": (["Oslo", "Rome"], ["Hello Oslo!", "Hello Rome!"]),
    # The demo service counts attempts in the worker's memory, so each life of the process fails its first attempt
    # again: three lives (two kills) can fail three times, one more than the default 3 attempts leave room for.
    "workflow_with_retry": ({"fail_times": 1, "retry": {"first_retry_seconds": 1, "max_attempts": 5}},
                            "Service succeeded after 2 attempt(s)"),
    "approval_workflow": ({"item": "laptop", "timeout_seconds": 3600}, "Approved"),
}


def test_kill9_of_sbworker_dev_twice_loses_and_doubles_nothing(tmp_path: Path) -> None:
    sb_port, dts_port = free_port(), free_port()
    args = ["dev", "--servicebus-port", str(sb_port), "--dts-port", str(dts_port), "--data", str(tmp_path),
            "--no-demo", "--dashboard-port", "0"]
    env = sbworker_env("x", "y")
    del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
    connection = (f"Endpoint=sb://localhost:{sb_port};SharedAccessKeyName=RootManageSharedAccessKey;"
                  "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
    dts_settings = parse_dts(f"Endpoint=http://localhost:{dts_port};Authentication=None")
    run = uuid.uuid4().hex[:6]
    expected = {f"{name}-{run}-{i}": name for name in WORKLOAD for i in range(75)}

    def start_dev() -> Process:
        dev = Process(args, env).start()
        dev.wait_for_output("listening on queue", timeout=90)
        return dev

    dev = start_dev()
    with ServiceBusClient.from_connection_string(connection) as sb, sb.get_queue_sender("workflow-requests") as out:
        messages: list[ServiceBusMessage] = [start_message(name, WORKLOAD[name][0], iid)[0]
                                             for iid, name in expected.items()]
        for i in range(0, len(messages), 50):
            out.send_messages(messages[i:i + 50])
    with clients.dts_client(dts_settings) as dts:
        until(lambda: sum(dts.get_orchestration_state(iid) is not None for iid in list(expected)[::15]) >= 8,
              what="8 of the sampled starts running", timeout=60)
    dev.proc.send_signal(signal.SIGKILL)  # mid-stream: some started, some running, most still queued
    dev.proc.wait(10)
    dev.close()

    dev = start_dev()
    approvals = [iid for iid, name in expected.items() if name == "approval_workflow"]
    with clients.dts_client(dts_settings) as dts:
        until(lambda: all(_waiting(dts, iid) for iid in approvals[::5]), what="the sampled approvals waiting",
              timeout=120, interval=0.2)
    dev.proc.send_signal(signal.SIGKILL)  # again, with approvals pending
    dev.proc.wait(10)
    dev.close()

    dev = start_dev()
    try:
        with ServiceBusClient.from_connection_string(connection) as sb, \
                sb.get_queue_sender("workflow-requests") as out:
            out.send_messages([approval_message(iid, True, "ada") for iid in approvals])
        with clients.dts_client(dts_settings) as dts:
            deadline = time.monotonic() + 240
            pending = dict(expected)
            while pending and time.monotonic() < deadline:
                for iid in list(pending)[:40]:
                    state = dts.get_orchestration_state(iid)
                    if state is not None and state.runtime_status in TERMINAL_STATUSES:
                        name = pending.pop(iid)
                        assert state.runtime_status.name == "COMPLETED", (iid, state.failure_details)
                        assert json.loads(state.serialized_output or "null") == WORKLOAD[name][1], iid
                time.sleep(0.05)
            assert not pending, f"{len(pending)} instances never completed, e.g. {list(pending)[:3]}"
            for iid in list(expected)[::7]:  # none twice: one start and one completion in each history
                history = dts.get_orchestration_history(iid)
                assert sum(isinstance(e, ExecutionStartedEvent) for e in history) == 1, iid
                assert sum(isinstance(e, ExecutionCompletedEvent) for e in history) == 1, iid
        assert dev.terminate(signal.SIGINT) == 0
    finally:
        dev.close()


def _waiting(dts: Any, instance_id: str) -> bool:
    state = dts.get_orchestration_state(instance_id)
    return state is not None and "awaiting_approval" in (state.serialized_custom_status or "")

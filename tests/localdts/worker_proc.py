"""A durabletask worker in its own process, for the kill -9 tests: every registered workflow plus one probe.

    python -m tests.localdts.worker_proc ENDPOINT [MAX_RECEIVE_BYTES]

Prints ``ready`` once started and runs until SIGTERM/SIGINT. The probe orchestration ``run_marked`` calls the
activity ``mark_and_wait``, which appends this process id to ``<dir>/runs`` and then waits for ``<dir>/release``:
a test can kill the worker while the activity is running, start another, and see who ran it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from durabletask import task
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.grpc_options import GrpcChannelOptions, GrpcWorkerResiliencyOptions

from localdts.cli import SIGNAL_POLL_SECONDS
from orchestrations import registry
from tests.localdts import isolation_workflows

TASKHUB = "default"
CHANNEL_OPTIONS = GrpcChannelOptions(raw_options=[
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
])


def mark_and_wait(ctx: Any, folder: str) -> int:
    """Record that this process runs the activity, then block until the test releases it."""
    path = Path(folder)
    with (path / "runs").open("a") as f:
        f.write(f"{os.getpid()}\n")
    while not (path / "release").exists():
        time.sleep(0.05)
    return os.getpid()


def run_marked(ctx: task.OrchestrationContext, folder: str) -> Generator[task.Task[Any], Any, Any]:
    result = yield ctx.call_activity(mark_and_wait, input=folder)
    return result


def build_worker(endpoint: str, max_receive_bytes: int | None = None) -> DurableTaskSchedulerWorker:
    """``max_receive_bytes``: the channel's receive limit (gRPC's default, 4 MiB, when None)."""
    options = CHANNEL_OPTIONS if max_receive_bytes is None else GrpcChannelOptions(
        max_receive_message_length=max_receive_bytes, raw_options=list(CHANNEL_OPTIONS.raw_options))
    worker = DurableTaskSchedulerWorker(
        host_address=endpoint, taskhub=TASKHUB, token_credential=None, secure_channel=False,
        channel_options=options,
        resiliency_options=GrpcWorkerResiliencyOptions(reconnect_backoff_base_seconds=0.2,
                                                       reconnect_backoff_cap_seconds=1.0),
    )
    registry.register(worker)
    isolation_workflows.register(worker)
    worker.add_orchestrator(run_marked)
    worker.add_activity(mark_and_wait)
    return worker


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="worker %(levelname)s %(name)s: %(message)s")
    received: list[int] = []  # not a threading.Event: see SIGNAL_POLL_SECONDS
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: received.append(number))
    worker = build_worker(argv[0], int(argv[1]) if len(argv) > 1 else None)
    worker.start()
    print("ready", flush=True)
    while not received:
        time.sleep(SIGNAL_POLL_SECONDS)
    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

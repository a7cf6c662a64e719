"""A plain durabletask worker process running the project's orchestrations and activities, and nothing else.

As the DTS Python guide writes one: a `DurableTaskSchedulerWorker`, every orchestrator and activity added, started,
left running until SIGTERM/SIGINT. The bench runs it beside `sbworker run --no-worker` to measure what co-hosting
the worker in the listener's process costs (README, Performance). Reads DTS_CONNECTION_STRING and TASKHUB_NAME:
`python -m bench.plain_worker`. With the SDK's own ConcurrencyOptions unless WORKER_THREADS,
WORKER_MAX_CONCURRENT_ORCHESTRATIONS or WORKER_MAX_CONCURRENT_ACTIVITIES is set (row 11's SDK ceiling runs it
with sbworker's settings, to tell the SDK's limit from ours).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.worker import ConcurrencyOptions

from bench.naive_sync import dts_settings
from orchestrations import registry


def concurrency(env: dict[str, str] | os._Environ[str]) -> ConcurrencyOptions:
    """The SDK's defaults, but for what WORKER_* sets (sbworker's variables, read the plain way)."""

    def number(name: str) -> int | None:
        return int(env[name]) if env.get(name) else None

    return ConcurrencyOptions(maximum_thread_pool_workers=number("WORKER_THREADS"),
                              maximum_concurrent_orchestration_work_items=number(
                                  "WORKER_MAX_CONCURRENT_ORCHESTRATIONS"),
                              maximum_concurrent_activity_work_items=number("WORKER_MAX_CONCURRENT_ACTIVITIES"))


def main() -> int:
    logging.getLogger("durabletask").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    endpoint, secure = dts_settings(os.environ["DTS_CONNECTION_STRING"])
    with DurableTaskSchedulerWorker(host_address=endpoint, secure_channel=secure, token_credential=None,
                                    taskhub=os.environ.get("TASKHUB_NAME", "default"),
                                    concurrency_options=concurrency(os.environ)) as worker:
        for orchestrator in registry.ORCHESTRATORS.values():
            worker.add_orchestrator(orchestrator)
        for activity in registry.ACTIVITIES.values():
            worker.add_activity(activity)
        worker.start()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

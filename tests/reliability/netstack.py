"""The listener and the DTS worker behind fault proxies: what production's links do, on loopback.

localbus (durable, 5 s locks) and localdts (the backend that re-offers work a vanished worker stream held, as DTS
does) run in this process; the listener is a separate `sbworker run --no-worker` process that reaches both only
through a `FaultProxy`; the DTS worker runs in this process through the DTS proxy too, so that
`activities.approvals.OUTBOX` shows how often each instance ran. The test's own client and all checks go
straight to the backends: outcomes are read where they live, never through a faulty link.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.history import ExecutionStartedEvent

from listener import service
from localbus import LocalBus
from localdts import LocalDts
from sbworker.core import clients
from sbworker.core.config import parse_dts
from tests.reliability import workload
from tests.reliability.common import durable_bus
from tests.reliability.faultproxy import FaultProxy
from tests.support.processes import LISTENING, Process, sbworker_env


def dts_connection(port: int) -> str:
    return f"Endpoint=http://localhost:{port};Authentication=None"


@dataclass
class NetStack:
    bus: LocalBus
    dts: LocalDts
    bus_proxy: FaultProxy
    dts_proxy: FaultProxy
    listener: Process
    client: DurableTaskSchedulerClient  # direct to localdts

    @property
    def proxied_servicebus(self) -> str:
        return self.bus.connection_string.replace(f"localhost:{self.bus.port}", f"localhost:{self.bus_proxy.port}")


@contextmanager
def net_stack(tmp_path: Path, **env: Any) -> Iterator[NetStack]:
    dts = LocalDts(port=0, fsync=False).start()  # memory only: this test is about links, not disks
    try:
        with durable_bus(tmp_path, lock="PT5S") as bus, FaultProxy(bus.port) as bus_proxy, \
                FaultProxy(dts.port) as dts_proxy:
            worker = service.dts_worker(parse_dts(dts_connection(dts_proxy.port)))
            worker.start()
            client = clients.dts_client(parse_dts(dts.connection_string))
            sb = bus.connection_string.replace(f"localhost:{bus.port}", f"localhost:{bus_proxy.port}")
            settings: dict[str, Any] = {"MAX_CONCURRENT_MESSAGES": 16, "PREFETCH_COUNT": 10,
                                        "MAX_MESSAGE_BYTES": workload.MAX_MESSAGE_BYTES,
                                        "APPROVAL_NOT_FOUND_WINDOW_SECONDS": 180, "SHUTDOWN_GRACE_SECONDS": 5,
                                        **env}
            try:
                with Process(["run", "--no-worker"], sbworker_env(sb, dts_connection(dts_proxy.port), **settings),
                             tmp_path / "listener.log", ready=LISTENING) as listener:
                    listener.start()
                    yield NetStack(bus, dts, bus_proxy, dts_proxy, listener, client)
            finally:
                client.close()
                worker.stop()
    finally:
        dts.stop(grace=0)


def started_more_than_once(client: DurableTaskSchedulerClient, instance_ids: Iterable[str]) -> list[str]:
    """Instances whose history holds other than one ExecutionStarted: "no instance twice", read from DTS itself
    (for runs where activities may run again, at least once as in DTS, so their count proves nothing)."""
    out = []
    for iid in instance_ids:
        starts = sum(isinstance(e, ExecutionStartedEvent) for e in client.get_orchestration_history(iid))
        if starts != 1:
            out.append(f"start {iid}: {starts} ExecutionStarted events in its history")
    return out

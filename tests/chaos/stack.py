"""The stack a campaign breaks: localbus and localdts as processes of their own (durable, on fixed ports, so that a
kill -9 and a restart are real), and N `sbworker run` replicas, each reaching both only through two fault proxies
of its own (one per link), so a fault on one replica's connection leaves the others' alone.

The campaign's own publisher, observer and checker go straight to localbus and localdts: outcomes are read where
they live, never through a faulty link.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import ExitStack
from pathlib import Path

from tests.reliability import workload
from tests.reliability.common import queue_settings
from tests.reliability.faultproxy import FaultProxy
from tests.support.ports import free_port
from tests.support.processes import LISTENING, Process, sbworker_env

LOCK = "PT5S"
LOCK_SECONDS = 5.0
MAX_DELIVERY = 10  # Service Bus's default and our Config.json's


def server(module: str, args: list[str], log_path: Path) -> Process:
    """`python -m localbus|localdts` on a fixed port with its data directory; ready once it prints its connection
    string (the line starting with `Endpoint=`), which is then its `ready_line`."""
    return Process(args, None, log_path, module=module, ready="Endpoint=")


def send_signal(process: Process, sig: signal.Signals) -> None:
    """SIGSTOP / SIGCONT / SIGTERM, to a process that may have died meanwhile (then nothing happens)."""
    if process.proc is not None and process.proc.poll() is None:
        os.kill(process.proc.pid, sig)


def _emulator_config(path: Path) -> Path:
    queues = [{"Name": name, "Properties": props}
              for name, props in queue_settings(lock=LOCK, max_delivery=MAX_DELIVERY).items()]
    path.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": queues}],
                                               "Logging": {"Type": "File"}}}), encoding="utf-8")
    return path


class Stack:
    """Started by `open()`, stopped by `close()`; `processes` and `links` are what faults are played on."""

    def __init__(self, out: Path, *, replicas: int, window: float) -> None:
        self.out = out
        self.window = window
        self.bus_port = free_port()
        self.dts_port = free_port()
        config = _emulator_config(out / "localbus-config.json")
        self.bus = server("localbus", ["--port", str(self.bus_port), "--config", str(config),
                                       "--data", str(out / "localbus")], out / "localbus.log")
        self.dts = server("localdts", ["--port", str(self.dts_port), "--data", str(out / "localdts")],
                          out / "localdts.log")
        self.replica_count = replicas
        self.replicas: list[Process] = []
        self.links: dict[str, FaultProxy] = {}
        self._exit = ExitStack()

    @property
    def processes(self) -> dict[str, Process]:
        out: dict[str, Process] = {f"replica{i}": r for i, r in enumerate(self.replicas)}
        out.update({"localbus": self.bus, "localdts": self.dts})
        return out

    @property
    def bus_connection(self) -> str:
        return self.bus.ready_line

    def open(self) -> Stack:
        (self.out / "localbus").mkdir(parents=True, exist_ok=True)
        self._exit.callback(self.bus.close)
        self.bus.start()
        self._exit.callback(self.dts.close)
        self.dts.start()
        for i in range(self.replica_count):
            bus_link = self._exit.enter_context(FaultProxy(self.bus_port, seed=1000 + i))
            dts_link = self._exit.enter_context(FaultProxy(self.dts_port, seed=2000 + i))
            self.links[f"replica{i}.bus"] = bus_link
            self.links[f"replica{i}.dts"] = dts_link
            sb = self.bus.ready_line.replace(f"localhost:{self.bus_port}", f"localhost:{bus_link.port}")
            env = sbworker_env(sb, f"Endpoint=http://localhost:{dts_link.port};Authentication=None",
                               MAX_CONCURRENT_MESSAGES=16, PREFETCH_COUNT=10,
                               MAX_MESSAGE_BYTES=workload.MAX_MESSAGE_BYTES,
                               APPROVAL_NOT_FOUND_WINDOW_SECONDS=self.window, SHUTDOWN_GRACE_SECONDS=5)
            replica = self._exit.enter_context(Process(["run"], env, self.out / f"replica{i}.log", ready=LISTENING))
            self.replicas.append(replica)
        for replica in self.replicas:
            replica.start(timeout=90)
        return self

    def close(self) -> None:
        for process in self.processes.values():  # a paused process cannot be killed cleanly otherwise
            send_signal(process, signal.SIGCONT)
        self._exit.close()

    def __enter__(self) -> Stack:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

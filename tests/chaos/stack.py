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
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Protocol

from tests.fixtures.processes import REPO, ListenerProcess, listener_env
from tests.reliability import workload
from tests.reliability.common import queue_settings
from tests.reliability.faultproxy import FaultProxy
from tests.support.ports import free_port

LOCK = "PT5S"
LOCK_SECONDS = 5.0
MAX_DELIVERY = 10  # Service Bus's default and our Config.json's


class Process(Protocol):
    """What the fault player needs of a replica or a server."""

    proc: subprocess.Popen[bytes] | None

    @property
    def alive(self) -> bool: ...

    def kill9(self) -> None: ...


class Server:
    """`python -m localbus|localdts` on a fixed port with its data directory; ready once it prints its
    connection string (the first line starting with `Endpoint=` on stdout, which goes to its log)."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        self.module = module
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.connection_string = ""
        self._log: IO[bytes] | None = None

    def start(self, *, wait_ready: bool = True, timeout: float = 60) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log = self._log or open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], cwd=REPO,
                                     stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        if wait_ready:
            self.wait_ready(offset, timeout)
        return self

    def wait_ready(self, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            found = [line for line in text.splitlines() if line.startswith("Endpoint=")]
            if found:
                self.connection_string = found[0].strip()
                return
            if not self.alive:
                raise RuntimeError(f"{self.module} exited ({self.proc and self.proc.returncode}):\n{text[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.module} did not print its connection string within {timeout}s")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


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
        self.bus = Server("localbus", ["--port", str(self.bus_port), "--config", str(config),
                                       "--data", str(out / "localbus")], out / "localbus.log")
        self.dts = Server("localdts", ["--port", str(self.dts_port), "--data", str(out / "localdts")],
                          out / "localdts.log")
        self.replica_count = replicas
        self.replicas: list[ListenerProcess] = []
        self.links: dict[str, FaultProxy] = {}
        self._exit = ExitStack()

    @property
    def processes(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"replica{i}": r for i, r in enumerate(self.replicas)}
        out.update({"localbus": self.bus, "localdts": self.dts})
        return out

    @property
    def bus_connection(self) -> str:
        return self.bus.connection_string

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
            sb = self.bus.connection_string.replace(f"localhost:{self.bus_port}", f"localhost:{bus_link.port}")
            env = listener_env(sb, f"Endpoint=http://localhost:{dts_link.port};Authentication=None",
                               MAX_CONCURRENT_MESSAGES=16, PREFETCH_COUNT=10,
                               MAX_MESSAGE_BYTES=workload.MAX_MESSAGE_BYTES,
                               APPROVAL_NOT_FOUND_WINDOW_SECONDS=self.window, SHUTDOWN_GRACE_SECONDS=5)
            replica = self._exit.enter_context(ListenerProcess(env, self.out / f"replica{i}.log", args=("run",)))
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

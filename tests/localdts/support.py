"""Real processes and real SDK clients against localdts: the backend and workers as subprocesses, polling helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from durabletask import client as dt_client
from durabletask import history as dt_history
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

ROOT = Path(__file__).resolve().parents[2]
TASKHUB = "default"


def endpoint(port: int) -> str:
    return f"http://localhost:{port}"


def new_client(port: int) -> DurableTaskSchedulerClient:
    return DurableTaskSchedulerClient(host_address=endpoint(port), taskhub=TASKHUB, token_credential=None,
                                      secure_channel=False)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process that prints a first line when it is ready; killed for good at ``close()``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self.env = env or {}
        self.popen: subprocess.Popen[str] | None = None
        self.first_line = ""

    def start(self, timeout: float = 30.0) -> Proc:
        err = self.log.open("a")
        self.popen = subprocess.Popen([sys.executable, *self.args], cwd=ROOT, env={**_env(), **self.env}, text=True,
                                      stdout=subprocess.PIPE, stderr=err)
        err.close()
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.popen.stdout.readline()  # blocks until ready or the process exits
        if not line or time.monotonic() > deadline:
            self.popen.wait(5)
            raise RuntimeError(f"{self.args} did not start (exit {self.popen.returncode}): {self.log.read_text()}")
        self.first_line = line.strip()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and the exit code. The bound is generous: with the shared machine's load at 10-14, a clean exit
        twice took over 15 s (unloaded, and under two busy loops, 25 exits took at most 2.8 s)."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def close(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def backend_proc(port: int, data: Path, log: Path, *extra: str) -> Proc:
    return Proc(["-m", "localdts", "--port", str(port), "--data", str(data), *extra], log)


def worker_proc(port: int, log: Path) -> Proc:
    return Proc(["-m", "tests.localdts.worker_proc", endpoint(port)], log)


T = TypeVar("T")


def retrying(call: Callable[[], T], timeout: float = 30) -> T:
    """Client calls right after a restart may meet a channel still backing off: try again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def state(client: DurableTaskSchedulerClient, instance_id: str) -> dt_client.OrchestrationState | None:
    """The instance's state, or None while the backend is unreachable (it may be restarting)."""
    try:
        return client.get_orchestration_state(instance_id)
    except Exception:
        return None


def wait_status(client: DurableTaskSchedulerClient, instance_id: str, status: dt_client.OrchestrationStatus,
                timeout: float = 30.0) -> dt_client.OrchestrationState:
    found: list[dt_client.OrchestrationState] = []

    def reached() -> bool:
        s = state(client, instance_id)
        if s is not None and s.runtime_status == status:
            found.append(s)
            return True
        return False
    wait_for(reached, timeout, f"{instance_id} to be {status.name}")
    return found[-1]


def wait_custom_status(client: DurableTaskSchedulerClient, instance_id: str, needle: str,
                       timeout: float = 30.0) -> None:
    def has() -> bool:
        s = state(client, instance_id)
        return s is not None and needle in (s.serialized_custom_status or "")
    wait_for(has, timeout, f"{instance_id} custom status containing {needle!r}")


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count(events: list[dt_history.HistoryEvent], kind: type[dt_history.HistoryEvent]) -> int:
    return sum(1 for e in events if isinstance(e, kind))

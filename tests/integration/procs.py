"""Running `sbworker` as a real subprocess against a test's localbus and DTS backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]


def stack_env(servicebus_connection: str, dts_connection: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICEBUS_", "DTS_", "AZURE_"))}
    env.update({
        "SERVICEBUS_CONNECTION_STRING": servicebus_connection,
        "DTS_CONNECTION_STRING": dts_connection,
        "HEALTH_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def sbworker(*args: str, env: Mapping[str, str], timeout: float = 60, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion (the installed console script's code path, via -m)."""
    return subprocess.run([sys.executable, "-m", "sbworker", *args], env=dict(env), cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, input=input)


class Service:
    """A long-running `sbworker run` with its combined output captured to a file (read it any time)."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self._log: IO[str] = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "sbworker", *args], env=dict(env), cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)

    @property
    def output(self) -> str:
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"sbworker exited ({self.proc.returncode}) before printing {text!r}:\n"
                                     f"{self.output[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"sbworker never printed {text!r}:\n{self.output[-3000:]}")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        os.unlink(self._log.name)


@contextmanager
def service(args: list[str], env: Mapping[str, str]) -> Iterator[Service]:
    s = Service(args, env)
    try:
        yield s
    finally:
        s.close()

"""Child processes of the tests, one wrapper for all: `sbworker`, `localbus`, `localdts` or a test's own worker as
`python -m MODULE ARGS`, with stdout and stderr appended to one log the test can read at any time.

A `Process` can be started again after it stopped or was killed (each start appends to the same log, so a test
can scan everything it ever wrote, e.g. for secrets); `ready` names the text a start waits for. `sbworker` is
the one-shot form: one CLI command to completion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
LISTENING = "listening on queue"  # what `sbworker run` logs once its receiver is connected


def sbworker_env(servicebus_connection: str, dts_connection: str, **settings: str | int | float) -> dict[str, str]:
    """The environment of `sbworker` against a test's broker and DTS backend; `settings` override variables.

    Nothing of the caller's own Service Bus, DTS or Azure settings leaks in; logs are at INFO, which tests read.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICEBUS_", "DTS_", "AZURE_", "TASKHUB_"))}
    env.update({
        "SERVICEBUS_CONNECTION_STRING": servicebus_connection,
        "DTS_CONNECTION_STRING": dts_connection,
        "HEALTH_PORT": "0",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in settings.items()})
    return env


def sbworker(*args: str, env: Mapping[str, str], timeout: float = 60, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """One `sbworker` command to completion (the console script's code path, through -m)."""
    return subprocess.run([sys.executable, "-m", "sbworker", *args], env=dict(env), cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, input=input)


class Process:
    """`python -m MODULE ARGS` (MODULE `sbworker` unless told) with its output appended to `log_path` (a temporary
    file, removed at `close()`, when not given). `env` is the whole environment (default: this process's)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, log_path: Path | None = None, *,
                 module: str = "sbworker", ready: str | None = None, cwd: Path = REPO) -> None:
        self.args = list(args)
        self.module = module
        self.ready = ready
        self.cwd = cwd
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self._temporary = log_path is None
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"{module}-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.ready_line = ""  # the line of the latest start that contained `ready`
        self._log: IO[bytes] | None = None
        self._offset = 0  # where the latest start's output begins in the log

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self, *, wait_ready: bool = True, timeout: float = 60) -> Process:
        """Start (again); with `ready`, return once this start has printed it (fail early if the process exits)."""
        assert not self.alive, "already running"
        self._log = self._log or open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], env=self.env, cwd=self.cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        if wait_ready and self.ready is not None:
            self.ready_line = self.wait_for_output(self.ready, timeout=timeout)
        return self

    def kill9(self) -> None:
        """SIGKILL: no drain, no settlement, no goodbye; whatever it held stays locked until the locks expire."""
        assert self.proc is not None and self.alive, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig` (SIGTERM, or SIGINT as Ctrl-C does) unless it already ended; its exit code. `timeout` is
        a liveness bound: the exits over 15 s once seen at load 10-14 were localdts ignoring the signal (see
        SIGNAL_POLL_SECONDS in localdts/cli.py)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Kill it if it still runs; close the log (and remove it when temporary)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._temporary:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- observing ----------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def output(self) -> str:
        """Everything written so far, by every start."""
        return self._read(0)

    def _read(self, offset: int) -> str:
        if self._log is not None:
            self._log.flush()
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        return data[offset:].decode("utf-8", "replace")

    def wait_for_output(self, text: str, *, timeout: float = 30, current_run_only: bool = True) -> str:
        """The first line (of the latest start, by default) containing `text`, once there is one; fails early,
        with the end of the log, if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = not self.alive  # before reading: what it printed just before exiting still counts
            out = self._read(self._offset if current_run_only else 0)
            if text in out:
                return next(line for line in out.splitlines() if text in line).strip()
            if exited:
                raise AssertionError(f"{self.module} {' '.join(self.args)} exited ({self.returncode}) before "
                                     f"printing {text!r}:\n{out[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.module} did not print {text!r} within {timeout}s:\n{out[-4000:]}")
            time.sleep(0.05)

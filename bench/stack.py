"""The local stack, one process per service: localbus, the in-memory DTS backend, and the listener.

Each service gets its own interpreter (and so its own GIL): a figure for the listener is then the listener's, not
the listener's minus whatever the broker or the backend took from the same GIL. All of them still share the
machine's cores with each other and with the load generator (the bench's own process).

The broker and backend children are driven over stdin/stdout, one JSON line per command: the parent asks
localbus how many messages a queue still holds (the broker's own count, not the listener's) and tells the
backend to forget its instances between runs.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

QUEUE = "bench"
QUEUE_PROPERTIES = {"LockDuration": "PT1M", "MaxDeliveryCount": 10}
SESSION_QUEUE = "bench-sessions"  # row 13: the same queue, session-enabled
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A service child process answering one JSON line per command line."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stack", kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=REPO_ROOT,
        )
        self._lock = threading.Lock()
        self.info = self._read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench {self.kind} process exited (code {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"bench {self.kind}: {answer['error']}")
        return answer

    def ask(self, command: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"cmd": command, **args}) + "\n")
            self.proc.stdin.flush()
            return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Broker(Child):
    def __init__(self) -> None:
        super().__init__("localbus")

    @property
    def connection_string(self) -> str:
        return str(self.info["connection_string"])

    def remaining(self, queue: str = QUEUE) -> int:
        """Messages the broker still holds for the queue, in any state (active, locked, scheduled)."""
        return int(self.ask("remaining", queue=queue)["n"])

    def counts(self, queue: str = QUEUE) -> dict[str, int]:
        return dict(self.ask("counts", queue=queue)["counts"])

    def purge(self, queue: str = QUEUE) -> int:
        return int(self.ask("purge", queue=queue)["n"])

    def receivers(self, queue: str = QUEUE) -> int:
        """Receive links attached to the queue: how the bench knows that every replica has connected."""
        return int(self.ask("receivers", queue=queue)["n"])


class Backend(Child):
    def __init__(self) -> None:
        super().__init__("dts")

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def connection_string(self) -> str:
        return f"Endpoint=http://localhost:{self.port};Authentication=None"

    def reset(self) -> None:
        self.ask("reset")


class DelayProxy:
    """bench.delayproxy in its own process, in front of the broker and the backend (`delay` seconds each way)."""

    def __init__(self, broker: Broker, backend: Backend, delay: float) -> None:
        self.delay = delay
        self._broker_port, self._backend_port = int(broker.info["port"]), backend.port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.delayproxy", "--delay", str(delay), str(self._broker_port),
             str(self._backend_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench delay proxy exited (code {self.proc.poll()})")
        ports = json.loads(line)["ports"]
        self.broker_port, self.backend_port = int(ports[str(self._broker_port)]), int(ports[str(self._backend_port)])
        self._broker_cs, self._backend_cs = broker.connection_string, backend.connection_string

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def servicebus_connection_string(self) -> str:
        return self._broker_cs.replace(f"localhost:{self._broker_port}", f"localhost:{self.broker_port}")

    @property
    def dts_connection_string(self) -> str:
        return self._backend_cs.replace(f"localhost:{self._backend_port}", f"localhost:{self.backend_port}")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# What the bench can run as "the listener": each reads the same environment and stops on SIGTERM.
LISTENER_COMMANDS = {
    # The `sbworker` console script's own entry point, run from this checkout (so a scratch copy of the repo
    # measures its own listener/, not the one an editable install points at).
    "sbworker": ["-c", "import sys; from sbworker.cli import main; sys.exit(main())", "run"],
    "naive_sync": ["-m", "bench.naive_sync"],
    "naive_async": ["-m", "bench.naive_async"],
    "plain_worker": ["-m", "bench.plain_worker"],
}


INHERITED_SETTINGS = ("SERVICEBUS_NAMESPACE", "SERVICEBUS_AUTHENTICATION", "TASKHUB_NAME", "AZURE_CLIENT_ID",
                      "WORKER_THREADS", "WORKER_MAX_CONCURRENT_ORCHESTRATIONS", "WORKER_MAX_CONCURRENT_ACTIVITIES")


class ListenerProcess:
    """`sbworker run` as it runs in production (or one of the reference listeners), configured through the
    environment only; with `proxy`, its DTS connections go through the delay proxy, and its Service Bus connection
    too unless `proxy_servicebus` is False.

    Not the tests' `tests.support.processes.Process`: the bench runs without the test suite (`python -m bench`, and
    bench/ must not import tests/), starts argv the tests never do (the reference listeners, the console script's
    entry point through -c from a scratch checkout, bench.msgtrace), and reads what they never need (pause/resume,
    peak RSS, CPU seconds from /proc).
    """

    def __init__(self, broker: Broker, backend: Backend, *, max_concurrent: int, prefetch: int,
                 worker: bool = False, log_path: Path | None = None, trace_path: Path | None = None,
                 kind: str = "sbworker", proxy: DelayProxy | None = None, proxy_servicebus: bool = True,
                 extra_env: dict[str, str] | None = None, root: Path = REPO_ROOT) -> None:
        # Nothing from the caller's shell that would change what is measured: the settings are the bench's.
        inherited = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
        env = {
            **inherited,
            "SERVICEBUS_CONNECTION_STRING": (proxy.servicebus_connection_string if proxy and proxy_servicebus
                                             else broker.connection_string),
            "SERVICEBUS_QUEUE": QUEUE,
            "DTS_CONNECTION_STRING": proxy.dts_connection_string if proxy else backend.connection_string,
            "MAX_CONCURRENT_MESSAGES": str(max_concurrent),
            "PREFETCH_COUNT": str(prefetch),
            "HEALTH_PORT": "0",
            "LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.kind = kind
        argv = [sys.executable, *LISTENER_COMMANDS[kind]]
        if kind == "sbworker":
            if trace_path is not None:  # the same entry point, with bench.msgtrace's per-step timestamps
                env["BENCH_TRACE_PATH"] = str(trace_path)
                argv = [sys.executable, "-m", "bench.msgtrace", "run"]
            if not worker:
                argv.append("--no-worker")
        self._log = open(log_path, "wb") if log_path else None  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=root, stdout=self._log or subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_kib(self) -> int:
        return proc_status_kib(self.proc.pid, "VmHWM")

    def rss_kib(self) -> int:
        return proc_status_kib(self.proc.pid, "VmRSS")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            with _suppress_lookup():
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return int(self.proc.returncode)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


def proc_status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmHWM = peak resident set, VmRSS = current)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- the child side -------------------------------------------------------------------------------------------

def _reply(**answer: Any) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def _serve_localbus() -> None:
    from localbus import LocalBus
    from localbus.broker import Broker as LocalBroker

    bus = LocalBus(port=0, queues={QUEUE: QUEUE_PROPERTIES,
                                   SESSION_QUEUE: {**QUEUE_PROPERTIES, "RequiresSession": True}},
                   data_path=None).start()
    _reply(port=bus.port, connection_string=bus.connection_string)

    def remaining(b: LocalBroker, queue: str) -> int:
        entity = b.entity(queue)
        return len(entity.records) if entity is not None else -1

    def purge(b: LocalBroker, queue: str) -> int:
        n = 0
        for path in (queue, queue + "/$DeadLetterQueue"):
            entity = b.entity(path)
            if entity is None:
                continue
            n += len(entity.records)
            for record in list(entity.records.values()):
                if record.lock_token is not None:
                    b.locks.pop(record.lock_token, None)
            entity.records.clear()
            entity.ready.clear()
        return n

    def receivers(b: LocalBroker, queue: str) -> int:
        entity = b.entity(queue)
        return len(entity.consumers) if entity is not None else -1

    try:
        for line in sys.stdin:
            request = json.loads(line)
            queue = request.get("queue", QUEUE)
            try:
                if request["cmd"] == "remaining":
                    _reply(n=bus.call(functools.partial(remaining, queue=queue)))
                elif request["cmd"] == "receivers":
                    _reply(n=bus.call(functools.partial(receivers, queue=queue)))
                elif request["cmd"] == "counts":
                    _reply(counts=bus.counts(queue))
                elif request["cmd"] == "purge":
                    _reply(n=bus.call(functools.partial(purge, queue=queue)))
                else:
                    _reply(error=f"unknown command {request['cmd']!r}")
            except Exception as error:
                _reply(error=f"{type(error).__name__}: {error}")
    finally:
        bus.stop()


def _serve_dts() -> None:
    import logging

    from durabletask.testing import create_test_backend

    logging.getLogger("durabletask").setLevel(logging.WARNING)
    for attempt in range(5):
        port = free_port()
        try:
            backend = create_test_backend(port=port)
            break
        except RuntimeError:
            if attempt == 4:
                raise
            time.sleep(0.1)
    _reply(port=port)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["cmd"] == "reset":
                backend.reset()
                _reply(ok=True)
            else:
                _reply(error=f"unknown command {request['cmd']!r}")
    finally:
        backend.stop(grace=1)


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else ""
    if kind == "localbus":
        _serve_localbus()
    elif kind == "dts":
        _serve_dts()
    else:
        print("usage: python -m bench.stack localbus|dts", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

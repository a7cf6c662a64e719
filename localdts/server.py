"""The embeddable :class:`LocalDts`: the durable backend on a port, restartable, for ``sbworker dev`` and tests."""

from __future__ import annotations

import ipaddress
import logging
import threading
from pathlib import Path

from .backend import DEFAULT_MAX_WORKERS, DurableBackend
from .limits import MAX_WORK_ITEM_BYTES
from .store import Store, resolve

log = logging.getLogger("localdts.server")


class ExposureError(ValueError):
    """Binding would let other machines drive a backend that has no authentication and no TLS."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` accepts connections from this machine only (localdts imports nothing of the
    product, so it keeps these few lines rather than sbworker.core.net's)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless the caller says so: anyone who reaches the port can do anything."""
    if not allow_remote and not is_loopback(host):
        raise ExposureError(f"{host} is not a loopback address; pass --allow-remote (LocalDts(allow_remote=True)) "
                            "to accept connections from other machines (localdts has no authentication)")


def connection_string(port: int) -> str:
    """What ``DTS_CONNECTION_STRING`` should be for a local backend on ``port`` (no TLS, no authentication)."""
    return f"Endpoint=http://localhost:{port};Authentication=None"


class LocalDts:
    """A DTS-compatible gRPC backend in background threads.

    With ``data_path`` (a directory, ``dts.sqlite3`` inside, or a ``.sqlite3`` file) every instance survives a
    restart or a crash; without it, state lives in memory and survives ``stop()``/``start()`` on this object
    only. ``start()`` raises :class:`~localdts.store.DataFileError` for an unusable data file and ``OSError``
    when the port is taken. ``port=0`` picks a free port once and keeps it across restarts. A ``host`` other
    than loopback needs ``allow_remote=True`` (:class:`ExposureError` otherwise).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, data_path: str | Path | None = None, *,
                 fsync: bool = True, max_workers: int = DEFAULT_MAX_WORKERS, allow_remote: bool = False,
                 max_work_item_bytes: int = MAX_WORK_ITEM_BYTES) -> None:
        check_exposure(host, allow_remote)
        self.host = host
        self.max_work_item_bytes = max_work_item_bytes
        self._port = port
        self.data_path = Path(data_path) if data_path is not None else None
        self.fsync = fsync
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._backend: DurableBackend | None = None
        self._memory_backend: DurableBackend | None = None
        self._store: Store | None = None
        self._running = False

    def start(self) -> LocalDts:
        """Load the data (if any), bind and serve; returns self. A no-op while running."""
        with self._lock:
            if self._running:
                return self
            store = Store(self.data_path, fsync=self.fsync) if self.data_path is not None else None
            try:
                if store is None and self._memory_backend is not None:
                    backend = self._memory_backend
                else:
                    backend = DurableBackend(host=self.host, port=self._port, store=store,
                                             max_workers=self.max_workers,
                                             max_work_item_bytes=self.max_work_item_bytes)
                backend.start()
            except BaseException:
                if store is not None:
                    store.close()
                raise
            if store is None:
                self._memory_backend = backend
            self._backend, self._store = backend, store
            self._port = backend.port
            self._running = True
            return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (open streams end, their work is offered again on the next start). Safe to call twice."""
        with self._lock:
            if not self._running or self._backend is None:
                return
            self._backend.stop(grace)
            if self._store is not None:
                self._store.close()
            self._store = None
            self._running = False

    def __enter__(self) -> LocalDts:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def port(self) -> int:
        """The bound port (the OS-chosen one after ``start()`` when constructed with ``port=0``)."""
        return self._port

    @property
    def connection_string(self) -> str:
        return connection_string(self._port)

    @property
    def endpoint(self) -> str:
        """``http://localhost:PORT``: the ``host_address`` for the SDK's DurableTaskScheduler clients."""
        return f"http://localhost:{self._port}"

    @property
    def data_file(self) -> Path | None:
        return resolve(self.data_path) if self.data_path is not None else None

    @property
    def backend(self) -> DurableBackend:
        """The running servicer, for tests that look inside; RuntimeError when stopped."""
        if self._backend is None or not self._running:
            raise RuntimeError("localdts is not running")
        return self._backend

"""The embeddable :class:`LocalDts`: the durable backend on a port, restartable, for ``sbworker dev`` and tests."""

from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent import futures
from pathlib import Path

import grpc

from .backend import DEFAULT_MAX_WORKERS, DurableBackend, open_server
from .hubs import DEFAULT_HUB, TaskHubs, hub_file, stored_hubs
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
    only. Task hubs are kept apart (:mod:`localdts.hubs`). ``start()`` raises
    :class:`~localdts.store.DataFileError` for an unusable data file and ``OSError`` when the port is taken.
    ``port=0`` picks a free port once and keeps it across restarts. A ``host`` other than loopback needs
    ``allow_remote=True`` (:class:`ExposureError` otherwise).
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
        self._hubs: TaskHubs | None = None
        self._stores: list[Store] = []
        self._server: grpc.Server | None = None
        self._pools: list[futures.ThreadPoolExecutor] = []
        self._running = False

    def _make(self, hub: str) -> DurableBackend:
        """One task hub's backend (with its own data file, when durable)."""
        store = Store(hub_file(resolve(self.data_path), hub), fsync=self.fsync) if self.data_path is not None \
            else None
        try:
            backend = DurableBackend(host=self.host, port=self._port, store=store, max_workers=self.max_workers,
                                     max_work_item_bytes=self.max_work_item_bytes)
        except BaseException:
            if store is not None:
                store.close()
            raise
        if store is not None:
            self._stores.append(store)
        return backend

    def start(self) -> LocalDts:
        """Load the data (if any), bind and serve; returns self. A no-op while running."""
        with self._lock:
            if self._running:
                return self
            if self._hubs is None or self.data_path is not None:  # memory mode keeps its hubs across restarts
                self._hubs = TaskHubs(self._make)
            hubs = self._hubs
            try:
                hubs.open([DEFAULT_HUB, *(stored_hubs(resolve(self.data_path)) if self.data_path else [])])
                self._server, self._pools, self._port = open_server(hubs, self.host, self._port, self.max_workers)
            except BaseException:
                self._close_stores()
                raise
            hubs.activate()
            self._server.start()
            log.info("localdts serving on %s:%d", self.host, self._port)
            self._running = True
            return self

    def _close_stores(self) -> None:
        for store in self._stores:
            store.close()
        self._stores = []

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (open streams end, their work is offered again on the next start). Safe to call twice."""
        with self._lock:
            if not self._running or self._hubs is None or self._server is None:
                return
            self._hubs.quiesce()
            self._server.stop(grace).wait()
            self._hubs.stop()
            for pool in self._pools:
                pool.shutdown(wait=False, cancel_futures=True)
            self._pools, self._server = [], None
            self._close_stores()
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
        """The default task hub's backend, for tests that look inside; RuntimeError when stopped."""
        return self.hub(DEFAULT_HUB)

    def hub(self, name: str) -> DurableBackend:
        """A task hub's backend (made if new), for tests that look inside; RuntimeError when stopped."""
        if self._hubs is None or not self._running:
            raise RuntimeError("localdts is not running")
        return self._hubs.get(name)

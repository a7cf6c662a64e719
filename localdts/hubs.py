"""Task hubs kept apart, as DTS keeps them: one backend, and one data file, per hub.

A DTS client names its task hub in the ``taskhub`` gRPC header (durabletask-azuremanaged's interceptor sets it
from the connection string's ``TaskHub``, ``default`` unless told). Each hub has its own instances, entities and
work items: a worker of hub ``a`` never gets hub ``b``'s work, and a client of ``a`` never sees ``b``'s instances.
:class:`TaskHubs` is the servicer the gRPC server calls: each call goes to the backend of its hub, made on first
use. The default hub keeps ``dts.sqlite3``; hub ``x`` gets ``dts.x.sqlite3`` beside it, found again at start-up.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from .backend import DurableBackend
from .store import DataFileError

DEFAULT_HUB = "default"
# DTS's quota is 25 task hubs per region and subscription on its Dedicated SKU ("Durable Task Scheduler",
# Limitations and considerations); localdts serves at most as many, each with a commit and a timer thread.
MAX_TASK_HUBS = 25
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class HubRefused(Exception):
    """A hub name that cannot be served; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def hub_file(data_file: Path, hub: str) -> Path:
    return data_file if hub == DEFAULT_HUB else data_file.with_name(f"{data_file.stem}.{hub}{data_file.suffix}")


def stored_hubs(data_file: Path) -> list[str]:
    """The hubs other than the default that have a data file beside ``data_file``."""
    names = (p.name[len(data_file.stem) + 1:-len(data_file.suffix)]
             for p in data_file.parent.glob(f"{data_file.stem}.*{data_file.suffix}"))
    return sorted(n for n in names if _HUB_NAME.fullmatch(n) and n != DEFAULT_HUB)


def hub_of(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "taskhub":
            return str(value) or DEFAULT_HUB
    return DEFAULT_HUB


class TaskHubs:
    """The servicer of a LocalDts: routes each gRPC call to the backend of the task hub it names."""

    def __init__(self, make: Callable[[str], DurableBackend]) -> None:
        self._make = make
        self._backends: dict[str, DurableBackend] = {}
        self._lock = threading.Lock()
        self._active = False

    def get(self, hub: str) -> DurableBackend:
        """The hub's backend, made (and started, when serving) on first use; raises :class:`HubRefused` for a
        name it cannot serve and :class:`~localdts.store.DataFileError` for a data file it cannot use."""
        backend = self._backends.get(hub)
        if backend is not None:
            return backend
        if not _HUB_NAME.fullmatch(hub):
            raise HubRefused(grpc.StatusCode.INVALID_ARGUMENT,
                             f"task hub name {hub[:80]!r} is not 1 to 64 letters, digits, '-' or '_' (starting "
                             "with a letter or digit)")
        with self._lock:
            backend = self._backends.get(hub)
            if backend is None:
                if len(self._backends) >= MAX_TASK_HUBS:
                    raise HubRefused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                     f"localdts serves at most {MAX_TASK_HUBS} task hubs (DTS's quota); "
                                     f"{hub!r} would be one more")
                backend = self._make(hub)  # DataFileError for a data file that cannot be used
                if self._active:
                    backend.activate()
                self._backends[hub] = backend
        return backend

    def open(self, hubs: Iterable[str]) -> None:
        for hub in hubs:
            self.get(hub)

    @property
    def backends(self) -> dict[str, DurableBackend]:
        return dict(self._backends)

    def activate(self) -> None:
        with self._lock:
            for backend in self._backends.values():
                backend.activate()
            self._active = True

    def quiesce(self) -> None:
        """Before the server stops: end every work-item stream (they would otherwise wait out the grace)."""
        for backend in self.backends.values():
            backend.quiesce()

    def stop(self) -> None:
        with self._lock:
            self._active = False
            for backend in self._backends.values():
                backend.stop(None)

    def __getattr__(self, name: str) -> Any:
        if not name[:1].isupper():
            raise AttributeError(name)

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            hub = hub_of(context)
            try:
                backend = self.get(hub)
            except HubRefused as exc:
                context.abort(exc.code, str(exc))
            except DataFileError as exc:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"task hub {hub!r}: {exc}")
            return getattr(backend, name)(request, context)
        call.__name__ = name
        return call

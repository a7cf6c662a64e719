"""The one wiring of the embedded stack: localbus + localdts + the service, pointed at each other.

`sbworker dev` runs it in the foreground (the service on the main thread, signals and all); the tests, the
screenshots and anything else that wants the whole product in-process use `local_stack`, which also runs the
service, on a thread of its own, and returns once every receiver is connected. Needs the `local` extra.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from listener.service import Service
from sbworker.core import config
from sbworker.core.config import Settings
from sbworker.core.errors import ConfigError

if TYPE_CHECKING:
    from localbus import LocalBus
    from localdts import LocalDts
    from sbworker.observability.telemetry import Telemetry


@dataclass
class Backends:
    """A running localbus and localdts, and the settings that point the service at them."""

    bus: LocalBus
    dts: LocalDts
    settings: Settings

    @property
    def servicebus_connection(self) -> str:
        return self.bus.connection_string

    @property
    def dts_port(self) -> int:
        return self.dts.port


@contextmanager
def backends(environ: Mapping[str, str] | None = None, *, host: str = "127.0.0.1", servicebus_port: int = 0,
             dts_port: int = 0, data_dir: Path | None = None, config_path: Path | None = None, key: str | None = None,
             allow_remote: bool = False) -> Iterator[Backends]:
    """Start localdts, then localbus (a data file that is not ours is refused before anything else runs); stop
    both on exit. `environ` is read as `sbworker run` reads the environment, then pointed at the two."""
    from localbus import ConfigError as BusConfigError
    from localbus import LocalBus, StorageError
    from localdts import DataFileError, LocalDts

    settings = config.load(environ or {})
    if data_dir is not None:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError("--data", f"cannot create the data directory {data_dir}: {error.strerror}") from None
    try:
        bus = LocalBus(host=host, port=servicebus_port, config_path=config_path, key=key, allow_remote=allow_remote,
                       data_path=data_dir / "servicebus.sqlite3" if data_dir else None)
    except BusConfigError as error:  # the queues file (`sbworker dev --config`)
        raise ConfigError("--config", str(error)) from None
    dts = LocalDts(host=host, port=dts_port, data_path=data_dir / "dts.sqlite3" if data_dir else None,
                   allow_remote=allow_remote)
    try:
        dts.start()
    except DataFileError as error:  # `sbworker dev --data` names a file that is not localdts's
        raise ConfigError("--data", str(error)) from None
    try:
        try:
            bus.start()
        except StorageError as error:  # `sbworker dev --data` where the message store cannot be written
            raise ConfigError("--data", str(error)) from None
        try:
            yield Backends(bus, dts, dataclasses.replace(
                settings,
                # The local backend, with the DTS settings that are not about where it is.
                dts=dataclasses.replace(
                    config.parse_dts(f"Endpoint=http://localhost:{dts.port};Authentication=None",
                                     taskhub=settings.dts.taskhub),
                    max_receive_bytes=settings.dts.max_receive_bytes, payload_storage=settings.dts.payload_storage),
                servicebus=dataclasses.replace(settings.servicebus,
                                               access=config.ConnectionString(bus.connection_string)),
            ))
        finally:
            bus.stop()
    finally:
        dts.stop(grace=1)


class ServiceThread:
    """A `Service` on a thread and event loop of its own: `start` returns once it is ready, `stop` drains it."""

    def __init__(self, settings: Settings, *, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self._telemetry = telemetry
        self._loop = asyncio.new_event_loop()
        self._service: Service | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="sbworker-service", daemon=True)

    @property
    def service(self) -> Service:
        assert self._service is not None, "not started"
        return self._service

    def start(self, timeout: float = 30.0) -> ServiceThread:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(timeout), self._loop).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self, timeout: float) -> None:
        self._service = Service(self.settings, telemetry=self._telemetry)
        await self._service.start()
        await self._service.ready(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self._service is not None:
            asyncio.run_coroutine_threadsafe(self._service.stop(), self._loop).result(timeout)
            self._service = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._loop.close()


@dataclass
class LocalStack(Backends):
    service: Service


@contextmanager
def local_stack(environ: Mapping[str, str] | None = None, *, telemetry: Telemetry | None = None
                ) -> Iterator[LocalStack]:
    """The whole product in this process, memory only, each part on a free port; `environ` adds settings (e.g. a
    shorter approval window). Everything is stopped on exit."""
    with backends({"HEALTH_PORT": "0", **(environ or {})}) as parts:
        running = ServiceThread(parts.settings, telemetry=telemetry).start()
        try:
            yield LocalStack(parts.bus, parts.dts, parts.settings, running.service)
        finally:
            running.stop()

"""Fixtures for localdts: a backend on a free port over a temporary data directory, clients and a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

from localdts import LocalDts
from tests.localdts import support
from tests.localdts.worker_proc import build_worker
from tests.support.ports import free_port
from tests.support.processes import Process


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test, deselect with -m 'not slow'")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def dts(data_dir: Path) -> Iterator[LocalDts]:
    """A durable backend on a free port (``port=0``: it keeps that port across ``stop()``/``start()``)."""
    backend = LocalDts(port=0, data_path=data_dir).start()
    yield backend
    backend.stop(grace=0)


@pytest.fixture
def client(dts: LocalDts) -> Iterator[DurableTaskSchedulerClient]:
    c = support.new_client(dts.port)
    yield c
    c.close()


@pytest.fixture
def worker(dts: LocalDts) -> Iterator[DurableTaskSchedulerWorker]:
    """An in-process worker with every registered workflow (for tests that do not kill the worker)."""
    w = build_worker(dts.endpoint)
    w.start()
    yield w
    w.stop()


class Backends:
    """``python -m localdts`` subprocesses on one port and one data directory, started and killed at will."""

    def __init__(self, port: int, data: Path, log: Path) -> None:
        self.port = port
        self.data = data
        self.log = log
        self.current: Process | None = None
        self._all: list[Process] = []

    def start(self, *extra: str) -> Process:
        proc = support.backend_proc(self.port, self.data, self.log, *extra)
        self._all.append(proc)
        self.current = proc.start()
        return proc

    def kill9(self) -> None:
        assert self.current is not None
        self.current.kill9()

    def close(self) -> None:
        for proc in self._all:
            proc.close()


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    b = Backends(free_port(), tmp_path / "data", tmp_path / "backend.log")
    yield b
    b.close()


@pytest.fixture
def proc_client(backends: Backends) -> Iterator[DurableTaskSchedulerClient]:
    c = support.new_client(backends.port)
    yield c
    c.close()

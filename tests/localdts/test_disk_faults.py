"""Disk faults (issue 27 item 3, localdts): a full disk, a read-only file system, a failing fsync.

The faults are real failures of the system calls SQLite makes (``faultfs.c``, preloaded into the backend's
process: writes or fsyncs of files in its data directory fail while a marker file exists), switched on and off
while the backend runs. Each must give a clear error (UNAVAILABLE naming the problem, one log line, never a
traceback per retry), acknowledge nothing it did not write, leave an intact database (``integrity_check``), and
recover by itself when the disk does; at start-up, one line and exit code 2.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from localdts.store import Store
from tests.localdts import support
from tests.support.ports import free_port
from tests.support.processes import Process
from tests.support.wait import until

HERE = Path(__file__).resolve().parent
FAULTS = {
    "enospc": "the disk is full",
    "eio-fsync": "fsync failed",
    "erofs": "read-only",
}


@pytest.fixture(scope="session")
def faultfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        message = "gcc is needed to build the disk-fault shim (make needs it anyway)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("faultfs") / "faultfs.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(HERE / "faultfs.c"), "-ldl"], check=True)
    return out


@dataclass
class Faulty:
    """A ``python -m localdts`` whose disk can fail on demand."""

    data: Path
    control: Path
    log: Path
    port: int
    shim: Path
    proc: Process | None = None

    def start(self, faults: bool = True) -> Process:
        env = {"LD_PRELOAD": str(self.shim), "FAULTFS_CONTROL": str(self.control),
               "FAULTFS_DIR": str(self.data.resolve())} if faults else {}
        self.proc = support.backend_proc(self.port, self.data, self.log, env=env).start()
        return self.proc

    def fault(self, kind: str, on: bool) -> None:
        marker = self.control / kind
        if on:
            marker.touch()
        else:
            marker.unlink()


@pytest.fixture
def faulty(tmp_path: Path, faultfs: Path) -> Iterator[Faulty]:
    (tmp_path / "control").mkdir()
    f = Faulty(tmp_path / "data", tmp_path / "control", tmp_path / "backend.log", free_port(), faultfs)
    yield f
    if f.proc is not None:
        f.proc.close()


def _refused(client: DurableTaskSchedulerClient, iid: str, says: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.schedule_new_orchestration("hello_cities", instance_id=iid)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "not acknowledged" in error.details() and says in error.details(), error.details()


def _starts_again(client: DurableTaskSchedulerClient, iid: str) -> bool:
    try:
        client.schedule_new_orchestration("hello_cities", instance_id=iid)
        return True
    except grpc.RpcError:
        return False


def _intact(data: Path) -> None:
    db = sqlite3.connect(data / "dts.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def _present(port: int, ids: list[str]) -> list[str]:
    client = support.new_client(port)
    try:
        until(lambda: _answers(client), what="the backend to answer", timeout=15)
        return [iid for iid in ids if client.get_orchestration_state(iid) is not None]
    finally:
        client.close()


def _answers(client: DurableTaskSchedulerClient) -> bool:
    try:
        client.get_orchestration_state("nobody")
        return True
    except grpc.RpcError:
        return False


@pytest.mark.parametrize("kind", [
    "enospc", pytest.param("eio-fsync", marks=pytest.mark.slow), pytest.param("erofs", marks=pytest.mark.slow)])
def test_a_disk_fault_is_refused_clearly_and_writes_resume_by_themselves(faulty: Faulty, kind: str) -> None:
    says = FAULTS[kind]
    faulty.start()
    client = support.new_client(faulty.port)
    try:
        acked = [client.schedule_new_orchestration("hello_cities", instance_id=f"before-{n}") for n in range(10)]
        faulty.fault(kind, True)
        refused = [f"during-{n}" for n in range(5)]
        for iid in refused:
            _refused(client, iid, says)
        assert client.get_orchestration_state("before-3") is not None  # reads still work
        time.sleep(2.5)  # the commit thread retries (about once a second) meanwhile
        faulty.fault(kind, False)
        until(lambda: _starts_again(client, "after-0"), what="writes to work again by themselves", timeout=15)
        acked.append("after-0")
    finally:
        client.close()
    log = faulty.log.read_text()
    assert "Traceback" not in log
    assert sum(says in line for line in log.splitlines()) == 1, log  # one line, not one per retry
    assert "writes work again" in log
    assert faulty.proc is not None
    faulty.proc.kill9()
    faulty.start(faults=False)
    # Nothing acknowledged is lost; what was refused was kept in memory and written once the disk allowed it.
    assert _present(faulty.port, acked + refused) == acked + refused
    faulty.proc.terminate()
    _intact(faulty.data)


def test_kill9_while_the_disk_is_full_loses_nothing_acknowledged(faulty: Faulty) -> None:
    faulty.start()
    client = support.new_client(faulty.port)
    try:
        acked = [client.schedule_new_orchestration("hello_cities", instance_id=f"before-{n}") for n in range(10)]
        faulty.fault("enospc", True)
        refused = [f"during-{n}" for n in range(5)]
        for iid in refused:
            _refused(client, iid, FAULTS["enospc"])
    finally:
        client.close()
    assert faulty.proc is not None
    faulty.proc.kill9()  # the disk never came back for this process
    faulty.start(faults=False)
    assert _present(faulty.port, acked + refused) == acked  # acknowledged: all there; refused: never written
    faulty.proc.terminate()
    _intact(faulty.data)


@pytest.mark.parametrize("kind", ["enospc", "erofs"])
def test_a_disk_that_cannot_be_written_at_start_is_one_line_and_exit_2(faulty: Faulty, kind: str) -> None:
    Store(faulty.data).close()  # an existing data file: starting on it writes (its boot counter)
    faulty.fault(kind, True)
    env = {**support._env(), "LD_PRELOAD": str(faulty.shim), "FAULTFS_CONTROL": str(faulty.control),
           "FAULTFS_DIR": str(faulty.data.resolve())}
    result = subprocess.run([sys.executable, "-m", "localdts", "--port", "0", "--data", str(faulty.data)],
                            cwd=support.ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and FAULTS[kind] in lines[0], result.stderr
    faulty.fault(kind, False)
    _intact(faulty.data)

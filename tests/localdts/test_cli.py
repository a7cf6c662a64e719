"""Item 6: ``python -m localdts`` (``sbworker dts``): prints the connection string, exits 0 on SIGTERM, and
refuses a data file that is not its own with one line and exit code 2, leaving the file untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from durabletask.client import OrchestrationStatus

from localdts import DataFileError, ExposureError, LocalDts
from localdts.store import APPLICATION_ID, SCHEMA_VERSION
from tests.localdts import support
from tests.support.ports import free_port
from tests.support.processes import Process


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localdts", *args], cwd=support.ROOT, capture_output=True,
                          text=True, timeout=timeout, env=support._env())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_serves_prints_its_connection_string_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = support.backend_proc(port, tmp_path / "data", tmp_path / "err.log").start()
    try:
        assert proc.ready_line == f"Endpoint=http://localhost:{port};Authentication=None"
        client = support.new_client(port)
        iid = client.schedule_new_orchestration("hello_cities")
        client.close()
        assert proc.terminate() == 0
        assert (tmp_path / "data" / "dts.sqlite3").exists()
        assert "Traceback" not in (tmp_path / "err.log").read_text()
    finally:
        proc.close()
    with LocalDts(port=0, data_path=tmp_path / "data") as dts:  # and what it acknowledged is there
        client = support.new_client(dts.port)
        state = client.get_orchestration_state(iid)
        client.close()
        assert state is not None and state.runtime_status == OrchestrationStatus.PENDING


def _foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO messages (body) VALUES ('keep me')")
    db.commit()
    db.close()


def _newer_schema(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.execute("CREATE TABLE future (x)")
    db.commit()
    db.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a database at all\n" * 100)


def _truncated(path: Path) -> None:
    with LocalDts(port=0, data_path=path):
        pass
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xde\xad" * 2000)


@pytest.mark.parametrize("make, says", [
    (_garbage, "not an SQLite database"),
    (_foreign_sqlite, "another program"),
    (_newer_schema, "newer localdts"),
    (_truncated, "dts.sqlite3"),
])
def test_a_file_that_is_not_ours_is_refused_with_one_line_and_left_untouched(
        tmp_path: Path, make: object, says: str) -> None:
    data = tmp_path / "dts.sqlite3"
    make(data)  # type: ignore[operator]
    before = _digest(data)

    result = _run("--port", "0", "--data", str(data))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbworker dts: error: ") and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _digest(data) == before


def test_a_data_file_in_use_by_another_backend_is_refused(tmp_path: Path) -> None:
    with LocalDts(port=0, data_path=tmp_path), pytest.raises(DataFileError, match="in use"):
        LocalDts(port=0, data_path=tmp_path).start()


@pytest.mark.parametrize("args, says", [
    (["--data", "x", "--memory"], "not allowed with argument"),
    (["--port", "99999"], "port out of range"),
    (["--port", "http"], "not a port number"),
    (["--bogus"], "unrecognized arguments"),
    (["--max-work-item-bytes", "1000"], "too small to hold a work item"),
    (["--max-work-item-bytes", "4MiB"], "not a number of bytes"),
])
def test_bad_arguments_print_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


def test_memory_mode_writes_no_data_file(tmp_path: Path) -> None:
    port = free_port()
    proc = Process(["--port", str(port), "--memory"], support._env(), tmp_path / "err.log", module="localdts",
                   ready=support.READY, cwd=tmp_path)
    try:
        assert proc.start().ready_line.startswith("Endpoint=http://localhost:")
        assert proc.terminate() == 0
        assert not (tmp_path / ".localdata").exists()  # the default data directory is not used
    finally:
        proc.close()


@pytest.mark.parametrize("command", [[sys.executable, "-m", "localdts"], [sys.executable, "-m", "sbworker", "dts"]],
                         ids=["python -m localdts", "sbworker dts"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_a_host_other_than_loopback_needs_allow_remote(command: list[str], host: str, tmp_path: Path) -> None:
    result = subprocess.run([*command, "--host", host, "--data", str(tmp_path)], cwd=support.ROOT,
                            capture_output=True, text=True, timeout=30, env=support._env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loopback address; pass --allow-remote" in lines[0], result.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was opened
    with pytest.raises(ExposureError, match="allow_remote=True"):
        LocalDts(host=host)


def test_allow_remote_binds_all_interfaces_with_a_warning(tmp_path: Path) -> None:
    port = free_port()
    proc = support.localdts_proc(["--host", "0.0.0.0", "--allow-remote", "--port", str(port), "--memory"],
                                 tmp_path / "err.log").start()
    try:
        assert proc.ready_line == f"Endpoint=http://localhost:{port};Authentication=None"
        client = support.new_client(port)
        assert client.get_orchestration_state("nobody") is None  # it answers
        client.close()
        assert proc.terminate() == 0
    finally:
        proc.close()
    err = (tmp_path / "err.log").read_text()
    assert "warning: listening on 0.0.0.0" in err and "no authentication" in err

"""Disk faults under localbus's store (issue 27, item 3): a disk that fills up, a read-only data directory, a
failing fsync. Real faults only: a small tmpfs that answers ENOSPC, a read-only mount, and an LD_PRELOAD shim
(``faultyio.c``) that makes the kernel calls fail in a ``python -m localbus`` child.

What must hold in each: the client gets a clear error (Service Bus's: quota exceeded for a full disk, server busy
for a store that cannot write), the file passes ``PRAGMA integrity_check``, every acknowledged message is still
there (after a restart, and after kill -9), and localbus recovers by itself once the fault is gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusError, ServiceBusQuotaExceededError, ServiceBusServerBusyError

from localbus import LocalBus
from localbus import connection_string as connection_string_for
from localbus.cli import main as cli_main
from tests.support.ports import free_port
from tests.support.wait import until

from .child import broker_process
from .diskfaults import MiB, build_shim, fill, integrity, small_disk
from .sdk import client, sender

pytestmark = pytest.mark.slow

Q = "q"
BODY = "x" * 32_000  # a message of ~32 KB: a small disk fills in a few dozen


def _message(n: int) -> ServiceBusMessage:
    return ServiceBusMessage(f"m{n:04d}:{BODY}")


def _drain(connection: str) -> list[str]:
    """Every message's number, received and completed."""
    got: list[str] = []
    with ServiceBusClient.from_connection_string(connection) as sb, sb.get_queue_receiver(Q) as r:
        while batch := r.receive_messages(max_message_count=50, max_wait_time=2):
            for m in batch:
                r.complete_message(m)
            got += [str(m).split(":", 1)[0] for m in batch]
    return got


def _send(s: Any, numbers: range, acked: list[str]) -> None:
    """Send numbered messages one by one, noting each one acknowledged; stops at the first error (raised)."""
    for n in numbers:
        s.send_messages(_message(n))
        acked.append(f"m{n:04d}")


def _sent(attempt: Callable[[], None]) -> bool:
    """Whether a send (with a fresh client) goes through now."""
    try:
        attempt()
    except ServiceBusError:
        return False
    return True


def test_a_filling_disk_refuses_sends_as_quota_exceeded_and_takes_them_again_once_space_returns(
        tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        bus = LocalBus(port=0, config_path=None, queues={Q: {}}, data_path=disk / "data", min_free_bytes=2 * MiB)
        bus.start()
        try:
            acked: list[str] = []
            with client(bus, retry_total=0) as sb, sender(sb, Q) as s:
                _send(s, range(3), acked)
                filler = fill(disk, leave=3 * MiB)
                with pytest.raises(ServiceBusQuotaExceededError) as refused:
                    _send(s, range(3, 200), acked)
                with sb.get_queue_receiver(Q) as r:  # receiving and completing still work meanwhile
                    [first] = r.receive_messages(max_wait_time=5)
                    r.complete_message(first)
                filler.unlink()
                until(lambda: _sent(lambda: s.send_messages(_message(999))), what="a send once space returned",
                      timeout=20, interval=0.2)
                acked.append("m0999")
            assert "MiB free, less than the 2.0 MiB localbus keeps free" in str(refused.value)
            assert integrity(disk / "data" / "localbus.sqlite3") == "ok"
            bus.stop()
            bus.start()  # what was acknowledged is on disk
            assert sorted(_drain(bus.connection_string)) == sorted(set(acked) - {str(first).split(":")[0]})
        finally:
            bus.stop()


def test_a_disk_full_at_commit_answers_nothing_of_that_batch_loses_nothing_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 8) as disk:
        # No free-space margin: the disk fills under a commit, which fails.
        bus = LocalBus(port=0, config_path=None, queues={Q: {}}, data_path=disk / "data", min_free_bytes=0)
        bus.start()
        try:
            acked: list[str] = []
            with client(bus, retry_total=0) as sb, sender(sb, Q) as s:
                _send(s, range(3), acked)
                filler = fill(disk)
                with pytest.raises(ServiceBusError):
                    _send(s, range(3, 300), acked)
            unanswered = f"m{len(acked):04d}"
            # While the disk stays full, every link is refused with Service Bus's quota-exceeded error.
            with pytest.raises(ServiceBusQuotaExceededError) as refused, client(bus, retry_total=0) as sb, \
                    sender(sb, Q) as s:
                s.send_messages(ServiceBusMessage("refused"))
            assert "the disk is full" in str(refused.value)
            filler.unlink()

            def send_after() -> None:
                with client(bus, retry_total=0) as sb, sender(sb, Q) as s:
                    s.send_messages(_message(999))
            until(lambda: _sent(send_after), what="a send once space returned", timeout=20, interval=0.2)
            acked.append("m0999")
            assert integrity(disk / "data" / "localbus.sqlite3") == "ok"
            bus.stop()
            bus.start()
            received = _drain(bus.connection_string)
            assert set(acked) <= set(received) <= set(acked) | {unanswered}
            assert len(received) == len(set(received))
        finally:
            bus.stop()


@pytest.mark.parametrize(("fault", "why"), [("fsync", "disk I/O error (SQLITE_IOERR_FSYNC)"),
                                            ("rofs", "disk I/O error (SQLITE_IOERR_WRITE)")])
def test_a_failing_fsync_or_read_only_writes_answer_server_busy_lose_nothing_and_recover(
        tmp_path: Path, fault: str, why: str) -> None:
    shim = build_shim(tmp_path)
    config = tmp_path / "Config.json"
    config.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": Q}]}]}}))
    data, switch = tmp_path / "data", tmp_path / "fault"
    port = free_port()
    connection = connection_string_for(port)
    env = {"LD_PRELOAD": str(shim), "LOCALBUS_FAULT": str(switch), "LOCALBUS_FAULT_DIR": str(data)}
    proc = broker_process(port, config, data, env)
    acked: list[str] = []
    try:
        with ServiceBusClient.from_connection_string(connection, retry_total=0) as sb, sender(sb, Q) as s:
            _send(s, range(5), acked)
            switch.write_text(fault)
            with pytest.raises(ServiceBusError):  # its commit fails: the connection is dropped, unanswered
                s.send_messages(_message(5))
        with pytest.raises(ServiceBusServerBusyError) as busy, \
                ServiceBusClient.from_connection_string(connection, retry_total=0) as sb, sender(sb, Q) as s:
            s.send_messages(ServiceBusMessage("refused"))
        assert "cannot write the message store" in str(busy.value) and why in str(busy.value)
        switch.unlink()

        def send_after() -> None:
            with ServiceBusClient.from_connection_string(connection, retry_total=0) as sb, sender(sb, Q) as s:
                s.send_messages(_message(999))
        until(lambda: _sent(send_after), what="a send once the fault is gone", timeout=20, interval=0.2)
        acked.append("m0999")
        proc.kill()  # -9: only what is on disk counts
        proc.wait(10)
        assert integrity(data / "localbus.sqlite3") == "ok"
        proc = broker_process(port, config, data)  # no shim now
        received = _drain(connection)
        assert set(acked) <= set(received) <= set(acked) | {"m0005"}
    finally:
        proc.kill()
        proc.wait(10)


def test_a_read_only_data_directory_is_one_line_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    with small_disk(tmp_path / "ro", 1, read_only=True) as ro:
        assert not os.access(ro, os.W_OK) or os.statvfs(ro).f_flag & os.ST_RDONLY
        assert cli_main(["--port", "0", "--data", str(ro / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"sbworker localbus: error: --data {ro / 'data'}: ") and "Read-only file system" in err

"""Durability (--data) and locks held by clients that vanish."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from localbus import connection_string as connection_string_for
from tests.fixtures.localbus import LocalBusFactory
from tests.support.ports import free_port

from .child import broker_process
from .sdk import bodies, client, sender

REPO = Path(__file__).resolve().parents[2]


def test_broker_killed_mid_stream_with_data_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the broker while a sender sends and a receiver holds locks; a new process on the same --data
    has every acknowledged message, and the old locks are gone."""
    config = tmp_path / "Config.json"
    config.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [
        {"Name": "durable", "Properties": {"LockDuration": "PT60S"}}]}]}}))
    port = free_port()
    connection_string = connection_string_for(port)
    acked: list[str] = []
    progress = threading.Condition()
    finish = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            sb = ServiceBusClient.from_connection_string(connection_string, retry_total=30,
                                                         retry_backoff_factor=0.1, retry_backoff_max=0.5)
            with sb, sender(sb, "durable") as s:
                while not finish.is_set():
                    body = f"m{len(acked)}"
                    s.send_messages(ServiceBusMessage(body, message_id=body))
                    with progress:
                        acked.append(body)
                        progress.notify_all()
        except BaseException as exc:
            errors.append(exc)

    broker = broker_process(port, config, tmp_path / "data")
    try:
        with ServiceBusClient.from_connection_string(connection_string) as sb:
            holder = sb.get_queue_receiver("durable")
            holder.__enter__()
            producer = threading.Thread(target=produce)
            producer.start()
            with progress:
                assert progress.wait_for(lambda: len(acked) >= 10, 20), errors
            assert len(holder.receive_messages(max_message_count=4, max_wait_time=5)) == 4
            broker.send_signal(signal.SIGKILL)  # mid-stream: sends in flight, four messages locked
            broker.wait(10)
            sent_before = len(acked)
            broker = broker_process(port, config, tmp_path / "data")
            with progress:
                assert progress.wait_for(lambda: len(acked) >= sent_before + 10, 30), errors
            finish.set()
            producer.join(30)
            assert not errors
            received: list[str] = []
            with sb.get_queue_receiver("durable") as r:  # the 60 s locks died with the old process
                while len(set(received)) < len(acked):
                    batch = r.receive_messages(max_message_count=100, max_wait_time=5)
                    assert batch, f"lost: {sorted(set(acked) - set(received))}"
                    received += bodies(batch)
                    for m in batch:
                        r.complete_message(m)
            assert set(received) == set(acked)  # at-least-once: a send in flight at the kill may be retried
            with contextlib.suppress(Exception):  # its connection died with the old broker
                holder.close()
    finally:
        finish.set()
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(10) == 0


def test_memory_bus_restart_keeps_messages_and_port(localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({"mem": {}})
    port, connection_string = bus.port, bus.connection_string
    with client(bus) as sb, sender(sb, "mem") as s:
        s.send_messages([ServiceBusMessage("kept 1"), ServiceBusMessage("kept 2")])
    bus.stop()
    bus.start()
    assert (bus.port, bus.connection_string) == (port, connection_string)
    assert bus.counts("mem")["active"] == 2


def test_receiver_killed_holding_locks_gets_messages_back_after_lock_duration(
        localbus_factory: LocalBusFactory) -> None:
    bus = localbus_factory({"kill": {"LockDuration": "PT2S"}})
    with client(bus) as sb, sender(sb, "kill") as s:
        s.send_messages([ServiceBusMessage(f"k{i}") for i in range(3)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "tests.localbus.holder", bus.connection_string, "kill", "3"],
                             stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line[0] == "LOCKED" and sorted(map(int, line[1:])) == [1, 2, 3]
        before = bus.connection_count()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    bus.wait_for_connections(at_most=before - 1)  # the server noticed the dead client...
    assert bus.counts("kill")["locked"] == 3  # ...but its locks stand until they expire
    with client(bus) as sb, sb.get_queue_receiver("kill") as r:
        got = r.receive_messages(max_message_count=3, max_wait_time=10)
        got += r.receive_messages(max_message_count=3 - len(got), max_wait_time=5) if len(got) < 3 else []
        assert sorted(bodies(got)) == ["k0", "k1", "k2"]
        assert [m.delivery_count for m in got] == [1, 1, 1]
        for m in got:
            r.complete_message(m)

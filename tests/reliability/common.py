"""Shared pieces of the reliability suite: a durable localbus, publishing, and reading outcomes back.

Outcomes are always read from where they live, through the real SDKs: instances from DTS, dead letters from
the dead-letter queue, leftovers from the queue (and the broker's own counts). Never from listener counters.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from durabletask.client import OrchestrationState

from activities import approvals
from localbus import LocalBus
from sbworker.core.messages import text
from tests.support.wait import until

if TYPE_CHECKING:
    from tests.reliability import workload

QUEUE = "workflow-requests"
DLQ_PATH = f"{QUEUE}/$DeadLetterQueue"
T = TypeVar("T")


def queue_settings(lock: str = "PT5S", max_delivery: int = 10, **extra: Any) -> dict[str, dict[str, Any]]:
    return {QUEUE: {"LockDuration": lock, "MaxDeliveryCount": max_delivery, "DefaultMessageTimeToLive": "PT1H",
                    "DeadLetteringOnMessageExpiration": True, **extra}}


@contextmanager
def durable_bus(tmp_path: Path, *, sas_key: str | None = None, **queue_kw: Any) -> Iterator[LocalBus]:
    """localbus with `--data` (sqlite under tmp_path): messages survive its restarts."""
    kwargs: dict[str, Any] = {"sas_key": sas_key} if sas_key else {}
    bus = LocalBus(port=0, config_path=None, queues=queue_settings(**queue_kw),
                   data_path=tmp_path / "localbus.sqlite3", **kwargs)
    bus.start()
    try:
        yield bus
    finally:
        bus.stop()


def body_bytes(message: ServiceBusReceivedMessage) -> bytes:
    return b"".join(bytes(section) for section in message.body)


# --- publishing ----------------------------------------------------------------------------------------------
def start_message(orchestration: str, *, input: Any = None, instance_id: str | None = None,
                  message_id: str | None = None) -> ServiceBusMessage:
    body: dict[str, Any] = {"orchestration": orchestration}
    if input is not None:
        body["input"] = input
    if instance_id is not None:
        body["instance_id"] = instance_id
    return ServiceBusMessage(json.dumps(body), subject="start", message_id=message_id or uuid.uuid4().hex,
                             content_type="application/json")


def approval_message(instance_id: str, approved: bool, approver: str, *, message_id: str | None = None,
                     comment: str | None = None) -> ServiceBusMessage:
    body: dict[str, Any] = {"instance_id": instance_id, "approved": approved, "approver": approver}
    if comment is not None:
        body["comment"] = comment
    return ServiceBusMessage(json.dumps(body), subject="approval", message_id=message_id or uuid.uuid4().hex,
                             content_type="application/json")


def event_message(instance_id: str, name: str, data: Any, *, message_id: str | None = None) -> ServiceBusMessage:
    """Subject `event`: raise the declared event `name` with `data` on the instance."""
    body = {"instance_id": instance_id, "name": name, "data": data}
    return ServiceBusMessage(json.dumps(body), subject="event", message_id=message_id or uuid.uuid4().hex,
                             content_type="application/json")


def publish(connection_string: str, messages: Iterable[Any], *, batch_size: int = 50) -> None:
    """Send with the real SDK in batches (one message alone when it does not fit a batch)."""
    items = list(messages)
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_sender(QUEUE) as sender:
        for i in range(0, len(items), batch_size):
            batch = sender.create_message_batch()
            for message in items[i:i + batch_size]:
                try:
                    batch.add_message(message)
                except ValueError:  # too big for what is left of the batch
                    sender.send_messages(message)
            if len(batch):
                sender.send_messages(batch)


# --- reading the broker back ---------------------------------------------------------------------------------
def peek_all(connection_string: str, sub_queue: ServiceBusSubQueue | None = None) -> list[ServiceBusReceivedMessage]:
    """Every message in the queue (or its DLQ), locked or not, scheduled included, without taking any."""
    out: list[ServiceBusReceivedMessage] = []
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver(QUEUE, sub_queue=sub_queue) as receiver:
        next_seq = 1
        while True:
            page = receiver.peek_messages(max_message_count=250, sequence_number=next_seq)
            if not page:
                return out
            out.extend(page)
            next_seq = max(m.sequence_number or 0 for m in page) + 1


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    reason: str | None
    description: str | None
    subject: str | None
    body: bytes
    delivery_count: int | None


def dead_letters(connection_string: str) -> list[DeadLetter]:
    return [DeadLetter(str(m.message_id), text(m.dead_letter_reason), text(m.dead_letter_error_description),
                       text(m.subject), body_bytes(m) if m.body_type.name == "DATA" else b"", m.delivery_count)
            for m in peek_all(connection_string, ServiceBusSubQueue.DEAD_LETTER)]


def queue_total(bus: LocalBus) -> int:
    """Messages still in the queue in any state (active, locked, deferred, scheduled), per the broker."""
    return bus.counts(QUEUE)["total"]


# --- reading DTS back ----------------------------------------------------------------------------------------
def states(dts_client: Any, instance_ids: Iterable[str]) -> dict[str, OrchestrationState | None]:
    return {iid: dts_client.get_orchestration_state(iid) for iid in instance_ids}


def sent_requests_for(instance_ids: Iterable[str]) -> dict[str, int]:
    """How often `send_approval_request` ran per instance (the workflow's first step: one per instance run)."""
    return {iid: len(approvals.OUTBOX.sent_for(iid)) for iid in set(instance_ids)}


def decision(state: OrchestrationState | None) -> dict[str, Any] | None:
    if state is None or not state.serialized_custom_status:
        return None
    status = json.loads(state.serialized_custom_status)
    return status if isinstance(status, dict) and status.get("stage") == "decided" else None


@dataclass
class Expectations:
    """What a run of published messages must end as."""

    starts: dict[str, set[str]] = field(default_factory=dict)  # instance id → acceptable serialized inputs
    approvals: dict[str, tuple[bool, str]] = field(default_factory=dict)  # instance id → (approved, approver)
    invalid: dict[str, str] = field(default_factory=dict)  # message id → expected reason code
    start_messages: set[str] = field(default_factory=set)
    approval_messages: set[str] = field(default_factory=set)


@dataclass
class Stack:
    """A durable localbus and a listener process against a DTS backend."""

    bus: LocalBus
    listener: Any  # tests.support.processes.Process

    @property
    def connection_string(self) -> str:
        return self.bus.connection_string

    def publish(self, messages: Iterable[Any]) -> None:
        publish(self.bus.connection_string, messages)

    def drained(self, timeout: float = 30) -> None:
        """Wait until the queue holds nothing in any state (every message settled for good)."""
        until(lambda: queue_total(self.bus) == 0, timeout=timeout, what="queue drained",
                   on_timeout=lambda: f"counts {self.bus.counts(QUEUE)}\n{self.listener.output[-3000:]}")
        assert self.listener.alive, self.listener.output[-4000:]

    def dead_letter(self, message_id: str) -> DeadLetter | None:
        found = [d for d in dead_letters(self.bus.connection_string) if d.message_id == message_id]
        assert len(found) <= 1, found
        return found[0] if found else None


@contextmanager
def running_stack(tmp_path: Path, dts_connection: str, *, queue: dict[str, Any] | None = None,
                  sas_key: str | None = None, **env: Any) -> Iterator[Stack]:
    from tests.support.processes import LISTENING, Process, sbworker_env

    settings: dict[str, Any] = {"MAX_CONCURRENT_MESSAGES": 16, "PREFETCH_COUNT": 0,
                                "APPROVAL_NOT_FOUND_WINDOW_SECONDS": 30, "SHUTDOWN_GRACE_SECONDS": 5, **env}
    with durable_bus(tmp_path, sas_key=sas_key, **(queue or {})) as bus, \
            Process(["run", "--no-worker"], sbworker_env(bus.connection_string, dts_connection, **settings),
                    tmp_path / "listener.log", ready=LISTENING) as listener:
        listener.start()
        yield Stack(bus, listener)


def wait_state(dts_client: Any, instance_id: str, predicate: Callable[[OrchestrationState], bool], *,
               timeout: float = 30, what: str = "state") -> OrchestrationState:
    def check() -> OrchestrationState | None:
        state = dts_client.get_orchestration_state(instance_id)
        return state if state is not None and predicate(state) else None

    result: OrchestrationState = until(check, timeout=timeout, what=f"{what} of {instance_id}")
    return result


def awaiting_approval(state: OrchestrationState) -> bool:
    return "awaiting_approval" in (state.serialized_custom_status or "")


class Publisher(threading.Thread):
    """Publishes a workload in paced batches, straight to the broker, while faults or kills play out."""

    def __init__(self, connection_string: str, w: workload.Workload, *, batch: int = 100, pause: float = 0.3
                 ) -> None:
        super().__init__(daemon=True)
        self.connection_string = connection_string
        self.w = w
        self.batch = batch
        self.pause = pause
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(0, len(self.w), self.batch):
                chunk = self.w.messages[i:i + self.batch]
                publish(self.connection_string, chunk, batch_size=self.batch)
                self.sent += len(chunk)
                time.sleep(self.pause)
        except BaseException as error:  # reported by the test
            self.error = error

"""Application properties keep their AMQP types (and values) through the copies sbworker makes: the re-enqueued
copies of an early approval, and a dead letter resubmitted (`sbworker dlq resubmit`, the dashboard's resubmit).

Two publishers send the approval: a plain AMQP client (python-qpid-proton) with a property of every type Service
Bus takes, and the official JavaScript SDK (@azure/service-bus over rhea) with what a Node service sends. Proton
reads the copies back, so the types are the ones on the wire, not what azure-servicebus makes of them. Before the
copies kept their encodings, a long, a ulong or a timestamp past 32 bits could not be re-enqueued at all (the SDK
sends every int as a 32-bit int): the approval went round abandon -> redelivery until MaxDeliveryCount, and every
other integer width, the binary, the char, the float and the decimal came back as another type.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import proton
import pytest
from proton import Message

from localbus import LocalBus
from sbworker import patches
from sbworker.core import clients
from sbworker.core.codes import Reason
from sbworker.core.entities import queue_source
from sbworker.core.messages import text
from sbworker.operations import dlq
from sbworker.patches import amqp_types
from tests.fixtures.dts import DtsBackend
from tests.fixtures.node import node_with_packages
from tests.integration.harness import QUEUE, Harness, listener_settings, servicebus_settings
from tests.localbus.rawclient import RawClient

INTEROP = Path(__file__).resolve().parents[1] / "interop"
# One property of each type Service Bus takes in application properties ("AMQP 1.0 in Azure Service Bus", type
# mapping; localbus refuses the others), as python-qpid-proton names them, with values at the edges of their type.
EVERY_TYPE: dict[str, Any] = {
    "long": 2**40 + 7,  # a Python int is an AMQP long
    "long-small": -5,
    "ulong": proton.ulong(2**64 - 1),
    "int": proton.int32(-(2**31)),
    "uint": proton.uint(2**32 - 1),
    "short": proton.short(-300),
    "ushort": proton.ushort(65_000),
    "byte": proton.byte(-128),
    "ubyte": proton.ubyte(255),
    "timestamp": proton.timestamp(1_765_011_234_567),  # milliseconds since the epoch
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "double": 0.1,
    "float": proton.float32(1.5),
    "boolean": True,
    "binary": b"\x00\xff not text",
    "string": "plain text, \u00e9",
    "char": proton.char("\u00e9"),
    # .NET's decimal 2.5 as Microsoft.Azure.Amqp lays it out (exponent >> 9 in the first byte), which the Python
    # SDK decodes; an IEEE 754 one is the undecodable case below.
    "decimal128": proton.decimal128(bytes([12, 62]) + bytes(10) + (25).to_bytes(4, "big")),
    "null": None,
    # .NET's DateTimeOffset (UTC ticks), TimeSpan (ticks) and Uri, as Service Bus describes them.
    "datetime-offset": proton.Described(proton.symbol("com.microsoft:datetime-offset"), 639_012_345_678_901_234),
    "timespan": proton.Described(proton.symbol("com.microsoft:timespan"), 36_000_000_000),
    "uri": proton.Described(proton.symbol("com.microsoft:uri"), "https://example.com/orders/42"),
}
# What @azure/service-bus sends for each kind of applicationProperties value (properties.mjs), as proton reads it:
# rhea encodes a JavaScript number by its value (uint, ulong, int, long or double) and a Date as a timestamp.
FROM_JAVASCRIPT: dict[str, Any] = {
    "count": proton.uint(7),
    "big": proton.ulong(5_000_000_000),
    "zero": proton.int32(0),
    "negative": proton.int32(-5),
    "very-negative": -5_000_000_000,
    "ratio": 1.5,
    "at": proton.timestamp(1_796_558_130_250),
    "name": "text",
    "flag": False,
    "nothing": None,
}
SETTINGS: dict[str, Any] = {"LockDuration": "PT30S", "MaxDeliveryCount": 5}
pytestmark = pytest.mark.usefixtures("dts_worker")


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalBus]:
    with LocalBus(port=0, config_path=None, queues={QUEUE: SETTINGS}, data_path=tmp_path / "bus.sqlite3") as b:
        yield b


@pytest.fixture
async def h(bus: LocalBus, dts_backend: DtsBackend) -> AsyncIterator[Harness]:
    # A window no load outlasts: an early approval is dead-lettered from a copy by Harness.dead_lettered_from_a_copy.
    async with Harness(bus, dts_backend.settings, listener_settings=listener_settings(
            approval_not_found_window_seconds=120.0)) as harness:
        yield harness


def typed(properties: dict[str, Any] | None, keys: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """The properties named in `keys` as (AMQP type as proton decodes it, value)."""
    found = {key: bytes(value) if isinstance(value, memoryview) else value  # proton's view of a binary
             for key, value in (properties or {}).items() if key in keys}
    return {key: (type(value), value) for key, value in found.items()}


def approval(message_id: str, properties: dict[str, Any]) -> Message:
    body = {"instance_id": f"never-{uuid.uuid4().hex}", "approved": True, "approver": "ada"}
    message = Message(id=message_id, subject="approval", content_type="application/json", properties=properties,
                      body=json.dumps(body).encode())
    message.inferred = True  # the body as an AMQP data section, as Service Bus publishers send it
    return message


def publish(bus: LocalBus, message: Message) -> None:
    with RawClient(bus) as raw:
        raw.authorize(QUEUE)
        delivery = raw.send(raw.conn.create_sender(QUEUE), message)
        assert delivery.remote_state == proton.Delivery.ACCEPTED, delivery.remote.condition


def publish_from_javascript(bus: LocalBus, message_id: str) -> None:
    node = node_with_packages(INTEROP, "the JavaScript publisher of test_property_types")
    options = {"queue": QUEUE, "messageId": message_id, "instanceId": f"never-{uuid.uuid4().hex}",
               "atMs": FROM_JAVASCRIPT["at"]}
    result = subprocess.run([node, str(INTEROP / "properties.mjs"), bus.connection_string, json.dumps(options)],
                            cwd=INTEROP, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"properties.mjs failed:\n{result.stdout}\n{result.stderr}"


def take(bus: LocalBus, address: str) -> Message:
    """The head message of `address`, read and handed back untouched (released: no delivery counted)."""
    with RawClient(bus) as raw:
        raw.authorize(QUEUE)
        receiver = raw.conn.create_receiver(address, credit=1)
        message = receiver.receive(timeout=10)
        receiver.release()
        return message


def resubmit(bus: LocalBus) -> dlq.Settled:
    """The whole dead-letter queue resubmitted (sbworker dlq resubmit's code; the dashboard's resubmit runs it)."""
    source = queue_source(QUEUE)
    with clients.servicebus_sync_client(servicebus_settings(bus)) as client:
        return dlq.resubmit(client, source, source.entity, None)


@pytest.mark.parametrize("publisher", ["proton", "javascript"])
async def test_every_property_keeps_its_amqp_type_through_a_reenqueue_and_a_resubmit(h: Harness, bus: LocalBus,
                                                                                      publisher: str) -> None:
    mid = uuid.uuid4().hex
    if publisher == "proton":
        sent = EVERY_TYPE
        await asyncio.to_thread(publish, bus, approval(mid, dict(EVERY_TYPE)))
    else:
        sent = FROM_JAVASCRIPT
        await asyncio.to_thread(publish_from_javascript, bus, mid)

    # Re-enqueued (a scheduled copy), then dead-lettered once the window closed: the copy there.
    dead = await h.dead_lettered_from_a_copy(mid)
    assert (str(dead.message_id), text(dead.dead_letter_reason)) == (mid, Reason.INSTANCE_NOT_FOUND)
    assert isinstance(dead.application_properties, dict)
    assert int(dead.application_properties.get(b"sbworker-retries", 0)) >= 1  # a copy, not the original
    copied = await asyncio.to_thread(take, bus, f"{QUEUE}/$deadletterqueue")
    assert typed(copied.properties, sent) == typed(sent, sent)

    await h.service.stop()
    assert (await asyncio.to_thread(resubmit, bus)).done == [dead.sequence_number]
    resubmitted = await asyncio.to_thread(take, bus, QUEUE)
    assert (resubmitted.id, resubmitted.subject) == (mid, "approval")
    assert typed(resubmitted.properties, sent) == typed(sent, sent)
    assert not {"sbworker-retries", "DeadLetterReason"} & set(resubmitted.properties)


async def test_a_dead_letter_the_sdk_cannot_decode_is_listed_and_resubmitted_with_every_property(
        h: Harness, bus: LocalBus) -> None:
    """An IEEE 754 decimal128 (what proton and Java send) breaks the SDK's decoder, which reads .NET's layout: the
    listener dead-letters the message UndecodableMessage; `sbworker dlq` still lists it (a peek decoded it too,
    and failed for the whole page) and a resubmit sends it back with every property as it was."""
    mid = uuid.uuid4().hex
    sent = {"amount": proton.decimal128((6175 << 113 | 25).to_bytes(16, "big")), "long": 2**40}
    await asyncio.to_thread(publish, bus, approval(mid, dict(sent)))
    [dead] = await h.dead_letters(1)
    assert text(dead.dead_letter_reason) == Reason.UNDECODABLE_MESSAGE
    source = queue_source(QUEUE)
    with clients.servicebus_sync_client(servicebus_settings(bus)) as client:
        [listed] = dlq.peek(client, source.entity, 10)
    assert (listed.message_id, listed.reason) == (mid, Reason.UNDECODABLE_MESSAGE)

    await h.service.stop()
    assert (await asyncio.to_thread(resubmit, bus)).done == [dead.sequence_number]
    resubmitted = await asyncio.to_thread(take, bus, QUEUE)
    assert resubmitted.id == mid and typed(resubmitted.properties, sent) == typed(sent, sent)
    assert set(resubmitted.properties) == set(sent)  # not our decoder's report of the failure


async def test_without_the_patch_an_uncopyable_approval_is_dead_lettered_at_once_and_not_resubmitted(
        h: Harness, bus: LocalBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an SDK version sbworker.patches does not know, a long cannot be sent again: the early approval is
    dead-lettered UncopyableProperties instead of looping to MaxDeliveryCount, and a resubmit leaves it where it
    is, saying why."""
    monkeypatch.setitem(patches._installed, patches.SERVICEBUS,
                        [n for n in patches.install(patches.SERVICEBUS) if n != amqp_types.TYPED_PROPERTIES])
    mid = uuid.uuid4().hex
    await asyncio.to_thread(publish, bus, approval(mid, {"amount": 2**40}))
    [dead] = await h.dead_letters(1)
    assert text(dead.dead_letter_reason) == Reason.UNCOPYABLE_PROPERTIES
    assert dead.delivery_count == 0 and b"sbworker-retries" not in (dead.application_properties or {})
    assert "'amount' is an integer past 32 bits" in (text(dead.dead_letter_error_description) or "")

    await h.service.stop()
    result = await asyncio.to_thread(resubmit, bus)
    assert (result.done, result.missing, list(result.refused)) == ([], [], [dead.sequence_number])
    assert "cannot be resubmitted" in result.refused[dead.sequence_number]
    assert bus.counts(f"{QUEUE}/$DeadLetterQueue")["total"] == 1 and bus.counts(QUEUE)["total"] == 0

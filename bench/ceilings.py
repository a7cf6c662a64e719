"""Rows 1 and 2: what the SDKs alone reach against the local stack, with none of our code in the path."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from bench.common import ORCHESTRATION, Dts, preload, run_prefix, start_messages, wait_until
from bench.stack import QUEUE, Backend, Broker, cpu_seconds
from sbworker.core import clients, config

DTS_IN_FLIGHT = 64


@dataclass(frozen=True)
class Ceiling:
    n: int
    seconds: float
    per_second: float
    bench_cpu_s: float  # CPU the bench process (the SDK client) used in the timed window
    server_cpu_s: float  # CPU the server (backend or broker) used in the timed window


async def raw_dts(backend: Backend, n: int, in_flight: int = DTS_IN_FLIGHT) -> Ceiling:
    """Orchestration starts/s with the async DTS client (the listener's own client class), `in_flight` at once."""
    prefix = run_prefix("dts")
    settings = config.parse_dts(backend.connection_string)
    client = clients.dts_async_client(settings)
    dts = Dts(backend.port)
    try:
        await client.schedule_new_orchestration(ORCHESTRATION, instance_id=prefix + "warmup")
        ids = [f"{prefix}{i:07d}" for i in range(n)]
        cursor = iter(ids)

        async def starter() -> None:
            for iid in cursor:
                await client.schedule_new_orchestration(ORCHESTRATION, instance_id=iid)

        cpu0, scpu0 = cpu_seconds_self(), cpu_seconds(backend.pid)
        started = time.perf_counter()
        await asyncio.gather(*(starter() for _ in range(in_flight)))
        seconds = time.perf_counter() - started
        cpu1, scpu1 = cpu_seconds_self(), cpu_seconds(backend.pid)
        await dts.verify(prefix, [*ids, prefix + "warmup"])
    finally:
        await client.close()
        await dts.close()
    backend.reset()
    return Ceiling(n, seconds, n / seconds, cpu1 - cpu0, scpu1 - scpu0)


async def raw_servicebus(broker: Broker, n: int, *, max_concurrent: int, prefetch: int,
                         serial_settle: bool = False) -> Ceiling:
    """Receive + complete messages/s with the async SDK, shaped like the listener's loop, without DTS calls.

    With `serial_settle`, at most one `complete_message` is awaited at a time (still `max_concurrent` messages
    held): the SDK's best case, because concurrent settlements convoy inside it (see README, Performance).
    """
    prefix = run_prefix("sb")
    async with ServiceBusClient.from_connection_string(broker.connection_string) as client:
        receiver = client.get_queue_receiver(QUEUE, receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                                             prefetch_count=prefetch)
        async with receiver:
            # Warm up: links open and one message round-trips before the clock starts.
            await preload(broker.connection_string, start_messages(prefix + "w", 1))
            for message in await receiver.receive_messages(max_message_count=1, max_wait_time=10):
                await receiver.complete_message(message)
            await preload(broker.connection_string, start_messages(prefix, n))
            cpu0, scpu0 = cpu_seconds_self(), cpu_seconds(broker.pid)
            started = time.perf_counter()
            done = asyncio.create_task(wait_until(broker, empty=True))
            await _receive_complete(receiver, n, max_concurrent, serial_settle)
            ended = await done
            cpu1, scpu1 = cpu_seconds_self(), cpu_seconds(broker.pid)
    seconds = ended - started
    return Ceiling(n, seconds, n / seconds, cpu1 - cpu0, scpu1 - scpu0)


async def _receive_complete(receiver: ServiceBusReceiver, n: int, limit: int, serial_settle: bool) -> None:
    """The listener's receive loop with the handler reduced to `complete_message`."""
    in_flight: set[asyncio.Task[None]] = set()
    slot_freed = asyncio.Event()
    settling = asyncio.Lock()

    async def handle(message: ServiceBusReceivedMessage) -> None:
        if serial_settle:
            async with settling:
                await receiver.complete_message(message)
        else:
            await receiver.complete_message(message)

    def done(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        slot_freed.set()

    received = 0
    while received < n:
        free = limit - len(in_flight)
        if free <= 0:
            slot_freed.clear()
            await slot_freed.wait()
            continue
        for message in await receiver.receive_messages(max_message_count=min(free, n - received), max_wait_time=1.0):
            received += 1
            task = asyncio.create_task(handle(message))
            in_flight.add(task)
            task.add_done_callback(done)
    if in_flight:
        await asyncio.wait(set(in_flight))


def cpu_seconds_self() -> float:
    return time.process_time()

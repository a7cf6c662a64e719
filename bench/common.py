"""What every measurement shares: messages, pre-loading the queue, asking DTS what exists, timing helpers."""

from __future__ import annotations

import asyncio
import importlib
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from durabletask.client import OrchestrationStatus
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs

from bench.stack import QUEUE, Broker
from sbworker.operations.publish import start_message

# (imported by name: the project has no protobuf stubs for mypy)
wrappers_pb2: Any = importlib.import_module("google.protobuf.wrappers_pb2")

ORCHESTRATION = "hello_cities"
SEND_BATCH = 200


def run_prefix(tag: str) -> str:
    """Instance ids of one run share a fresh prefix, so DTS can be asked about exactly that run."""
    return f"b-{tag}-{uuid.uuid4().hex[:8]}-"


def start_messages(prefix: str, n: int, orchestration: str = ORCHESTRATION) -> list[ServiceBusMessage]:
    """`n` contract-conforming start messages (built by the publishing CLI's own code); instance id = message id."""
    return [start_message(orchestration, message_id=f"{prefix}{i:07d}")[0] for i in range(n)]


async def preload(connection_string: str, messages: Sequence[ServiceBusMessage], queue: str = QUEUE) -> float:
    """Send everything in batches; returns seconds taken."""
    started = time.perf_counter()
    async with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_sender(queue) as sender:
        for i in range(0, len(messages), SEND_BATCH):
            batch = await sender.create_message_batch()
            for m in messages[i:i + SEND_BATCH]:
                batch.add_message(m)
            await sender.send_messages(batch)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Paced:
    """What `send_paced` did: when each message was published (epoch s, just before its send, by message id), how
    long each send took, and the seconds from the first scheduled send to the end of the last."""

    published: dict[str, float]
    send_s: list[float]
    elapsed: float


async def send_paced(connection_string: str, messages: Sequence[ServiceBusMessage], rate: float,
                     queue: str = QUEUE, *, opening: ServiceBusMessage | None = None) -> Paced:
    """One message per send (as a real publisher sends), on an absolute schedule of `rate` a second, so that a slow
    send does not lower the rate; `opening` is sent first, unpaced, to open the link before the clock starts."""
    published: dict[str, float] = {}
    send_s: list[float] = []
    async with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_sender(queue) as sender:
        if opening is not None:
            await sender.send_messages(opening)
        t0 = time.perf_counter() + 0.05
        for i, message in enumerate(messages):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            published[str(message.message_id)] = time.time()
            before = time.perf_counter()
            await sender.send_messages(message)
            send_s.append(time.perf_counter() - before)
        return Paced(published, send_s, time.perf_counter() - t0)


def created_after_ms(published: dict[str, float], states: dict[str, pb.OrchestrationState]) -> list[float]:
    """Per instance (instance id = message id), publish → the backend's own creation time, in milliseconds."""
    return [(states[iid].createdTimestamp.seconds + states[iid].createdTimestamp.nanos / 1e9 - sent) * 1000
            for iid, sent in published.items()]


async def wait_until(broker: Broker, *, empty: bool = True, at_least: int = 0, timeout: float = 120.0,
                     interval: float = 0.01) -> float:
    """Poll the broker's own count (O(1) on its side) until the queue is empty / holds `at_least`; return when."""
    deadline = time.perf_counter() + timeout
    while True:
        n = await asyncio.to_thread(broker.remaining)
        now = time.perf_counter()
        if (empty and n == 0) or (not empty and n >= at_least):
            return now
        if now > deadline:
            raise TimeoutError(f"queue still holds {n} message(s) after {timeout:.0f}s")
        await asyncio.sleep(interval)


class Dts:
    """Read-only questions to the DTS backend over its gRPC API (what any DTS client would see)."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.aio.insecure_channel(f"localhost:{port}")
        self._stub: Any = stubs.TaskHubSidecarServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def has_at_least(self, prefix: str, n: int, status: OrchestrationStatus | None = None) -> bool:
        """Do ≥ n instances with this id prefix exist (in `status`)? One page of one row, however many exist."""
        if n <= 0:
            return True
        query = pb.InstanceQuery(
            instanceIdPrefix=wrappers_pb2.StringValue(value=prefix),
            runtimeStatus=[status.value] if status is not None else None,
            maxInstanceCount=1,
            continuationToken=wrappers_pb2.StringValue(value=str(n - 1)),
        )
        response = await self._stub.QueryInstances(pb.QueryInstancesRequest(query=query))
        return len(response.orchestrationState) > 0

    async def instances(self, prefix: str) -> dict[str, pb.OrchestrationState]:
        """Every instance with this id prefix, paged (no inputs or outputs)."""
        found: dict[str, pb.OrchestrationState] = {}
        token: Any = None
        while True:
            query = pb.InstanceQuery(instanceIdPrefix=wrappers_pb2.StringValue(value=prefix),
                                     maxInstanceCount=2000, continuationToken=token)
            response = await self._stub.QueryInstances(pb.QueryInstancesRequest(query=query))
            for state in response.orchestrationState:
                found[state.instanceId] = state
            if not response.HasField("continuationToken") or not response.continuationToken.value:
                return found
            token = response.continuationToken

    async def wait_for(self, prefix: str, n: int, *, status: OrchestrationStatus | None = None,
                       timeout: float = 120.0, interval: float = 0.05) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            if await self.has_at_least(prefix, n, status):
                return time.perf_counter()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"fewer than {n} instances {prefix}* ({status}) after {timeout:.0f}s")
            await asyncio.sleep(interval)

    async def verify(self, prefix: str, ids: Iterable[str]) -> None:
        """Every expected instance exists, and nothing else under the prefix does."""
        expected = set(ids)
        found = set(await self.instances(prefix))
        missing, extra = expected - found, found - expected
        if missing or extra:
            raise AssertionError(f"DTS has {len(found)} instances {prefix}*: {len(missing)} missing "
                                 f"(e.g. {sorted(missing)[:3]}), {len(extra)} unexpected")


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    max: float
    n: int


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank percentiles."""
    ordered = sorted(values)
    if not ordered:
        return Percentiles(math.nan, math.nan, math.nan, math.nan, 0)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return Percentiles(rank(50), rank(95), rank(99), ordered[-1], len(ordered))

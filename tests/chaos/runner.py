"""One campaign: start the stack, play the fault schedule while the workload publishes, heal, wait until the
system has settled, read every outcome where it lives into the history, and judge it.

The publisher and the observer use the asyncio SDKs with a deadline on every call: against a SIGSTOPped broker the
blocking Service Bus client hangs on connect whatever its timeout says (tried), and a blocking DTS call has no
deadline at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusClient as SyncServiceBusClient
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient
from durabletask.client import OrchestrationQuery, OrchestrationState
from durabletask.history import EventRaisedEvent, ExecutionStartedEvent

from tests.chaos import checker
from tests.chaos.faults import FaultPlayer
from tests.chaos.history import History, read
from tests.chaos.plan import Send, make_plan, summary
from tests.chaos.schedule import DEFAULT_WINDOW, Schedule, make_schedule
from tests.chaos.stack import LOCK_SECONDS, MAX_DELIVERY, Stack
from tests.reliability.common import QUEUE, dead_letters, peek_all

SEND_TIMEOUT = 10.0
CALL_TIMEOUT = 10.0
FINISHED = frozenset({"COMPLETED", "FAILED", "TERMINATED"})
# After the last fault: a worker's half-open DTS stream takes ~60 s to be noticed (gRPC keepalive, measured), an
# approval for an unknown instance waits one window, and the queue must empty after that.
DRAIN_AFTER_WINDOW = 150.0


@dataclass
class Campaign:
    seed: int
    duration: float
    out: Path
    replicas: int | None = None
    window: float = DEFAULT_WINDOW

    @property
    def prefix(self) -> str:
        return f"c{self.seed}-"

    @property
    def history_path(self) -> Path:
        return self.out / "history.jsonl"

    def schedule(self) -> Schedule:
        return make_schedule(self.seed, self.duration, self.replicas)

    @property
    def replay(self) -> str:
        """The `make chaos` command that runs this campaign again: same schedule, same workload."""
        return self.schedule().replay_command(self.window)

    def run(self, echo: Callable[[str], None] = print) -> checker.Report:
        schedule = self.schedule()
        plan = make_plan(self.seed, self.duration)
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        echo(schedule.describe())
        echo(f"workload: {len(plan)} messages {summary(plan)}")
        with History(self.history_path) as history:
            history.write("campaign", seed=self.seed, duration=self.duration, replicas=schedule.replicas,
                          window=self.window, lock=LOCK_SECONDS, max_delivery=MAX_DELIVERY, prefix=self.prefix,
                          replay=self.replay)
            history.write("schedule", **schedule.as_record())
            with Stack(self.out, replicas=schedule.replicas, window=self.window) as stack:
                t0 = time.monotonic()
                player = FaultPlayer(stack, schedule, history, t0)
                player.start()
                try:
                    asyncio.run(_Drive(self, stack, plan, history, player, t0).run())
                finally:
                    player.stop()
                if player.error is not None:
                    raise RuntimeError(f"the fault player failed: {player.error!r}") from player.error
        records = read(self.history_path)
        report = checker.check(records)
        echo(checker.render(report, records))
        echo(f"  history: {self.history_path}")
        return report


class Publisher:
    """Publishes one message until the broker acknowledges it, recording every attempt; a failed attempt may or
    may not have stored the message, so the retry is a re-publish with the same message id."""

    def __init__(self, connection_string: str, history: History) -> None:
        self.connection_string = connection_string
        self.history = history
        self._client: ServiceBusClient | None = None
        self._sender: ServiceBusSender | None = None

    async def publish(self, send: Send) -> None:
        attempt = 0
        while True:
            attempt += 1
            fields = send.record() if attempt == 1 else {"mid": send.message_id, "role": send.role}
            self.history.write("send", attempt=attempt, **fields)
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self._get().send_messages(send.message())
            except Exception as error:
                self.history.write("nack", mid=send.message_id, attempt=attempt,
                                   error=f"{type(error).__name__}: {error}"[:200])
                await self.close()
                await asyncio.sleep(min(2.0, 0.25 * attempt))
                continue
            self.history.write("ack", mid=send.message_id, attempt=attempt)
            return

    def _get(self) -> ServiceBusSender:
        if self._sender is None:
            self._client = ServiceBusClient.from_connection_string(self.connection_string, retry_total=0)
            self._sender = self._client.get_queue_sender(QUEUE)
        return self._sender

    async def close(self) -> None:
        client, self._client, self._sender = self._client, None, None
        if client is not None:
            try:
                async with asyncio.timeout(5):
                    await client.close()
            except Exception:  # a dead connection: nothing to close cleanly
                pass


def _created(state: OrchestrationState) -> float:
    moment: datetime = state.created_at
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Drive:
    """The asyncio side of a campaign: publish the plan, publish late decisions, drain, observe."""

    def __init__(self, campaign: Campaign, stack: Stack, plan: list[Send], history: History, player: FaultPlayer,
                 t0: float) -> None:
        self.campaign = campaign
        self.stack = stack
        self.plan = plan
        self.history = history
        self.player = player
        self.t0 = t0
        self.late: list[Send] = []  # decisions waiting for their instance to finish
        self.dts: AsyncDurableTaskSchedulerClient

    async def run(self) -> None:
        # Made on the running loop: a grpc.aio channel belongs to the loop it was created on.
        self.dts = AsyncDurableTaskSchedulerClient(host_address=f"http://localhost:{self.stack.dts_port}",
                                                   taskhub="default", secure_channel=False, token_credential=None,
                                                   logger=logging.getLogger(__name__))  # not the SDK's INFO lines
        publisher = Publisher(self.stack.bus_connection, self.history)
        late_publisher = Publisher(self.stack.bus_connection, self.history)
        watcher = asyncio.create_task(self._publish_late(late_publisher))
        planned = asyncio.create_task(self._publish_plan(publisher))
        try:
            # The faults end on time even when the publisher lags behind an outage: then everything is healed.
            await asyncio.sleep(max(0.0, self.t0 + self.campaign.duration - time.monotonic()))
            await asyncio.to_thread(self.player.heal_all)
            self.history.write("healed", at=round(time.monotonic() - self.t0, 2))
            await planned
            began = time.monotonic()
            converged = await self._drain(began + self.campaign.window + DRAIN_AFTER_WINDOW)
            watcher.cancel()
            for send in self.late:
                self.history.write("skip", mid=send.message_id, iid=send.instance_id,
                                   why="its instance never finished")
            await self._observe()
            self.history.write("end", converged=converged, drain_seconds=round(time.monotonic() - began, 1))
        finally:
            watcher.cancel()
            planned.cancel()
            await publisher.close()
            await late_publisher.close()
            await self.dts.close()

    async def _publish_plan(self, publisher: Publisher) -> None:
        for send in self.plan:
            await asyncio.sleep(max(0.0, self.t0 + send.at - time.monotonic()))
            if send.after_finished:
                self.late.append(send)
            else:
                await publisher.publish(send)

    async def _call(self, coro: Any) -> Any:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await coro

    async def _publish_late(self, publisher: Publisher) -> None:
        """A late decision goes out once its instance is seen finished (read straight from localdts)."""
        while True:
            await asyncio.sleep(1.0)
            for send in [s for s in self.late if self.t0 + s.at <= time.monotonic()]:
                try:
                    state = await self._call(self.dts.get_orchestration_state(send.instance_id or "",
                                                                              fetch_payloads=False))
                except Exception:  # localdts down or paused: look again later
                    break
                if state is not None and state.runtime_status.name in FINISHED:
                    self.history.write("seen", iid=send.instance_id, status=state.runtime_status.name)
                    await publisher.publish(send)
                    self.late.remove(send)

    async def _drain(self, deadline: float) -> bool:
        """Until the queue is empty and every instance has finished (or waits for an approval that expired)."""
        while time.monotonic() < deadline:
            await asyncio.to_thread(self.player.watch)
            try:
                if not self.late and await self._settled():
                    return True
            except Exception:  # a call timed out: the stack is still recovering
                pass
            await asyncio.sleep(2.0)
        return False

    async def _settled(self) -> bool:
        if await asyncio.to_thread(_queue_has_messages, self.stack.bus_connection):
            return False
        states = await self._call(self.dts.get_all_orchestration_states(
            OrchestrationQuery(instance_id_prefix=self.campaign.prefix)))
        running = [s for s in states if s.runtime_status.name not in FINISHED]
        if not running:
            return True
        # With the queue empty nothing more can reach it: it waits for good if an approval or event it needed
        # expired before it appeared (in the DLQ already); a workflow left to time out has none and is waited for.
        dead = {d.message_id for d in await asyncio.to_thread(dead_letters, self.stack.bus_connection)
                if d.reason == "InstanceNotFound"}
        aimed: dict[str, set[str]] = {}
        for send in self.plan:
            if send.instance_id and not send.role.startswith(("start", "invalid")):
                aimed.setdefault(send.instance_id, set()).add(send.message_id)
        return all(aimed.get(s.instance_id, set()) & dead for s in running)

    async def _observe(self) -> None:
        """Write what DTS and the broker hold now: each instance with its history's summary, each dead letter,
        each message left in the queue."""
        states: list[OrchestrationState] = await self._call(self.dts.get_all_orchestration_states(
            OrchestrationQuery(instance_id_prefix=self.campaign.prefix, fetch_inputs_and_outputs=True)))
        for state in sorted(states, key=lambda s: s.instance_id):
            events = await self._call(self.dts.get_orchestration_history(state.instance_id))
            self.history.write("instance", iid=state.instance_id, name=state.name, status=state.runtime_status.name,
                               input=_json(state.serialized_input), output=_json(state.serialized_output),
                               custom=_json(state.serialized_custom_status), created=round(_created(state), 3),
                               **_summarise(events))
        for d in await asyncio.to_thread(dead_letters, self.stack.bus_connection):
            self.history.write("dead", mid=d.message_id, reason=d.reason, description=d.description,
                               subject=d.subject, delivery_count=d.delivery_count)
        for m in await asyncio.to_thread(peek_all, self.stack.bus_connection):
            self.history.write("left", mid=str(m.message_id), subject=m.subject, delivery_count=m.delivery_count,
                               state=str(getattr(m, "state", "?")))


def _summarise(events: list[Any]) -> dict[str, Any]:
    """How often it was started, which message started it, and every event raised on it (with its message id)."""
    starts = [e for e in events if isinstance(e, ExecutionStartedEvent)]
    raised = []
    for e in events:
        if isinstance(e, EventRaisedEvent):
            data = _json(e.input)
            raised.append({"name": e.name, "mid": data.get("message_id") if isinstance(data, dict) else None})
    return {"starts": len(starts), "started_by": [dict(e.tags or {}) for e in starts], "raised": raised}


def _queue_has_messages(connection_string: str) -> bool:
    with SyncServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver(QUEUE) as receiver:
        return bool(receiver.peek_messages(max_message_count=1, sequence_number=1))

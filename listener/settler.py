"""Applying a settlement: the only code that touches the settlement API (complete, dead-letter, abandon, and the
scheduled copy that re-enqueues an early approval).

Every action is idempotent, so a settlement that fails (a lost lock or link) is only logged: Service Bus
redelivers the message and the pipeline decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import MessageLockLostError

from listener.delivery import Delivery
from listener.settlement import Abandon, Action, Complete, DeadLetter, RetryHistory, RetryLater
from sbworker import patches
from sbworker.core import messages
from sbworker.core.codes import AbandonReason, Reason
from sbworker.core.entities import Source
from sbworker.core.errors import one_line
from sbworker.core.text import clip
from sbworker.observability.observer import Observer
from sbworker.patches.settle_batch import SettlementBatch

log = logging.getLogger(__name__)

# Longest message id, subject or instance id written into a log line.
LOG_FIELD_CHARS = 128
# A dead-letter description ends with the trace id when tracing is on: the DLQ entry can be found in the viewer.
MAX_DESCRIPTION_CHARS = 1024


# azure-servicebus grants a sender's management link 10,000 reply credits once and never tops them up: past that
# many schedule or cancel calls the broker holds the replies (as AMQP says it must) and the next call waits forever,
# with every handler queued behind the sender's lock (an approval flood stalled there). The sender is replaced well
# before that, and a call that gets no reply fails instead of waiting.
SENDER_OPERATIONS = 5_000
MANAGEMENT_TIMEOUT_SECONDS = 60.0


class Settler:
    """Applies Actions for one listener; holds the sender its re-enqueued copies go out through."""

    def __init__(self, source: Source, *, not_found_window: float, observer: Observer,
                 alive: Callable[[], None]) -> None:
        self._source = source
        self._window = not_found_window
        self._observer = observer
        self._alive = alive
        self._client: ServiceBusClient | None = None
        self._sender: ServiceBusSender | None = None
        self._sender_operations = 0
        self._batch: SettlementBatch | None = None
        # One shared sender for re-enqueues: the SDK does not guard a link's concurrent first use, so serialise.
        self._sender_lock = asyncio.Lock()

    def open(self, client: ServiceBusClient, receiver: ServiceBusReceiver | None) -> None:
        """The client and receiver of the session now starting (its retry-queue sender is made on first use). No
        receiver in session mode: each session has its own, and completions are not batched."""
        self._client = client
        self._batch = patches.settlement_batch(receiver) if receiver is not None else None

    async def close(self) -> None:
        await self._drop_sender()
        self._client = None
        self._batch = None

    async def settle(self, delivery: Delivery, action: Action) -> Action | None:
        """Apply `action`; never raises. Cancelling the caller does not stop the settlement, nor its log line and
        metrics: they belong to the settlement, which runs on (the lock is only released by the broker's answer).
        Returns the action applied (a failed re-enqueue is an Abandon), None if it failed."""
        batch = self._batch
        if isinstance(action, Complete) and batch is not None:
            # No task of its own: the batch's one task per frame does the work (sbworker/patches/settle_batch.py).
            completing = batch.complete(delivery.message)
            completing.add_done_callback(functools.partial(self._report_completion, delivery, action))
            await asyncio.shield(completing)
            return action if completing.result() is None else None
        settling = asyncio.ensure_future(self._apply(delivery, action))
        settling.add_done_callback(functools.partial(self._report, delivery))
        await asyncio.shield(settling)
        applied, error = settling.result()
        return applied if error is None else None

    async def _apply(self, delivery: Delivery, action: Action) -> tuple[Action, BaseException | None]:
        """Apply `action` through the SDK; returns what was applied, and the error if it failed."""
        message, receiver = delivery.message, delivery.receiver
        applied: Action = action
        try:
            if isinstance(action, Complete):
                await receiver.complete_message(message)
            elif isinstance(action, DeadLetter):
                await receiver.dead_letter_message(
                    message, reason=action.reason,
                    error_description=_description(action.description, delivery.trace.trace_id))
            elif isinstance(action, RetryLater):
                scheduled = await self._reenqueue(delivery, action)
                if scheduled is None:
                    applied = Abandon(AbandonReason.REENQUEUE_FAILED)
                    await receiver.abandon_message(message)
                else:
                    self._observer.metrics.reenqueued()
                    try:
                        await receiver.complete_message(message)
                    except MessageLockLostError:  # certainly not completed (an ambiguous failure keeps the copy)
                        await self._withdraw(delivery, scheduled)
                        raise
            else:
                await receiver.abandon_message(message)
        except Exception as error:
            return applied, error
        return applied, None

    def _report(self, delivery: Delivery, settling: asyncio.Future[tuple[Action, BaseException | None]]) -> None:
        if not settling.cancelled():  # only when the loop itself is torn down
            self._reported(delivery, *settling.result())

    def _report_completion(self, delivery: Delivery, action: Action, completing: asyncio.Future[BaseException | None]
                           ) -> None:
        if not completing.cancelled():
            self._reported(delivery, action, completing.result())

    def _reported(self, delivery: Delivery, applied: Action, error: BaseException | None) -> None:
        if error is not None:
            # Lost lock / link: Service Bus redelivers it, and every action we take is idempotent.
            log.warning("could not settle message %s (%s): %s; it will be redelivered", field(delivery.message_id),
                        type(applied).__name__, one_line(error))
            delivery.trace.unsettled(one_line(error))
            return
        self._alive()
        _log_settled(delivery, applied)
        self._observer.settled(delivery.trace, _action_label(applied), _reason(applied),
                               time.monotonic() - delivery.started)

    async def _reenqueue(self, delivery: Delivery, action: RetryLater) -> list[int] | None:
        """Schedule a copy on the source's retry queue, carrying the retry history one step further; its sequence
        numbers, so that it can be withdrawn (None if it could not be sent)."""
        message = delivery.message
        history = RetryHistory.of(message, self._window, datetime.now(UTC), confirm=action.confirm)
        properties: dict[str | bytes, Any] = {**messages.properties(message), **history.properties(action.attempt)}
        delivery.trace.inject(properties)
        copy = messages.copy(message, body=messages.body_bytes(message), application_properties=properties)
        delay = action.delay * random.uniform(0.8, 1.2)
        async with self._sender_lock:
            try:
                if self._sender_operations >= SENDER_OPERATIONS:
                    await self._drop_sender()
                if self._sender is None:
                    if self._client is None:
                        raise ConnectionError("no Service Bus session is open")
                    self._sender = self._source.retry_sender(self._client)
                    self._sender_operations = 0
                self._sender_operations += 1
                scheduled = self._sender.schedule_messages(copy, datetime.now(UTC) + timedelta(seconds=delay))
                return list(await asyncio.wait_for(scheduled, MANAGEMENT_TIMEOUT_SECONDS))
            except Exception as error:
                log.warning("could not re-enqueue message %s: %s", field(message.message_id), one_line(error))
                await self._drop_sender()
                return None

    async def _drop_sender(self) -> None:
        """Close the re-enqueue sender, whatever state its link is in; the next re-enqueue opens a new one."""
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender.close()
            self._sender = None

    async def _withdraw(self, delivery: Delivery, sequence_numbers: list[int]) -> None:
        """The message a copy replaces was not completed (its lock was lost), so it comes back and will be
        re-enqueued again: cancel this copy, or the approval would wait twice and, if its instance never came, be
        dead-lettered twice (found by the chaos campaign, seed 3). Only a lost lock proves the complete did not
        happen: after a dropped link it may have, and cancelling then would lose the approval, so a copy can still
        double there, or if the process dies between the two steps (the Python SDK has no transactions)."""
        async with self._sender_lock:
            try:
                if self._sender is None:
                    raise ConnectionError("the re-enqueue sender was closed")
                self._sender_operations += 1
                await asyncio.wait_for(self._sender.cancel_scheduled_messages(sequence_numbers),
                                       MANAGEMENT_TIMEOUT_SECONDS)
            except Exception as error:
                log.warning("could not withdraw the re-enqueued copy of message %s: %s; it may wait twice",
                            field(delivery.message.message_id), one_line(error))


def _action_label(action: Action) -> str:
    if isinstance(action, RetryLater):
        return "reenqueue"
    return "dead_letter" if isinstance(action, DeadLetter) else type(action).__name__.lower()


def _reason(action: Action) -> str:
    if isinstance(action, Complete):
        return action.note
    if isinstance(action, RetryLater):
        return "pending" if action.confirm else Reason.INSTANCE_NOT_FOUND.value
    return action.reason


def _description(description: str, trace_id: str | None) -> str:
    suffix = f" (trace_id={trace_id})" if trace_id else ""
    return clip(description, MAX_DESCRIPTION_CHARS - len(suffix)) + suffix


def _log_settled(delivery: Delivery, action: Action) -> None:
    warning = action.warning if isinstance(action, Complete) else ""
    level = logging.WARNING if warning or isinstance(action, DeadLetter | Abandon) else logging.INFO
    if not log.isEnabledFor(level):  # one line per message: not built when it would not be written
        return
    message = delivery.message
    instance_id = getattr(delivery.parsed, "instance_id", None)
    reason = action.note if isinstance(action, Complete) else action.reason
    if isinstance(action, Abandon) and action.detail:
        reason = f"{action.reason} ({action.detail})"
    if warning:  # the whole sentence (clipped later than a field): it says what is left to happen
        reason = f"{field(reason)} ({clip(warning, MAX_DESCRIPTION_CHARS)})"
    session = f" session_id={field(message.session_id)}" if message.session_id is not None else ""
    log.log(
        level,
        "settled message_id=%s subject=%s instance_id=%s action=%s reason=%s delivery_count=%s duration_ms=%.1f%s",
        field(delivery.message_id), field(delivery.subject), field(instance_id),
        type(action).__name__.lower(), (reason if warning else field(reason)) or "-", message.delivery_count,
        (time.monotonic() - delivery.started) * 1000, session,
    )


def field(value: object) -> str:
    """Publishers choose message ids and subjects: a 200 KB subject must not become a 200 KB log line."""
    return clip(value, LOG_FIELD_CHARS, count=True)



"""Completions requested in the same turn of the event loop go out together: one disposition frame per run of
consecutive delivery ids, one wait for all their outcomes.

AMQP 1.0 (2.7.6) lets one disposition frame settle every delivery from `first` to `last`, and the rhea client that
`@azure/service-bus` runs on writes contiguous settlements with the same outcome exactly so
(`write_dispositions` in rhea's lib/session.js); proton, which localbus runs on, applies a range delivery by
delivery. The aio Python SDK always sends one frame per message and waits for each outcome on its own: from a
backlog that was the largest single share of the listener's CPU (27% of py-spy samples in `complete_message`,
2026-12-06).

Nothing is weakened: every message still gets its own outcome from the broker, checked with the SDK's own
`check_disposition_outcome`, and marked settled only when that outcome says so. Whatever is not a confirmed
`accepted` (a rejected outcome such as a lost lock, no outcome in time, a detached link, or a message this path
does not handle: deferred, session, lock already expired, SDK tracing on) goes through the SDK's own
`complete_message`, which then raises or recovers exactly as it always did (its management-link fallback
included).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

BATCHED_SETTLEMENT = "receiver.batched_settlement"
ACCEPTED = "accepted"

# One batch in flight at a time: while its outcomes are on their way, the next batch fills (group commit). From a
# backlog that put 10-17 messages in a frame instead of 4.5, for 7-12% less listener CPU per message (2026-12-06,
# 3 rotated rounds each, loopback and 2 ms proxy). When there is no batch in flight, a completion goes out on the next
# turn of the loop, so a lone message waits for nothing.
MAX_IN_FLIGHT = 1
# ...but an outcome that is slow to come (a broker under load, a lost frame: the SDK waits up to 60 s) holds the next
# batch back for at most this long.
HOLD_BACK_SECONDS = 0.02

# What a completion resolves to: None once confirmed, else the exception the SDK's own complete_message raised.
Outcome = BaseException | None


def available() -> bool:
    """Whether the SDK still has every private piece this module uses (checked once, by `patches.install`)."""
    from azure.servicebus._pyamqp import outcomes, receiver
    from azure.servicebus._pyamqp.aio import _receiver_async

    link = _receiver_async.ReceiverLink
    return (all(hasattr(link, name) for name in ("_outgoing_disposition", "_wait_for_disposition_outcome"))
            and hasattr(receiver, "check_disposition_outcome") and hasattr(outcomes, "Accepted"))


class SettlementBatch:
    """Completes the messages of one receiver, several to a frame. One per receiver link (per listener session)."""

    def __init__(self, receiver: Any) -> None:
        self._receiver = receiver
        self._queued: list[tuple[Any, asyncio.Future[Outcome]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        # For the bench and the tests: frames written and messages they settled.
        self.frames = 0
        self.batched = 0

    def complete(self, message: Any) -> asyncio.Future[Outcome]:
        """Ask for `message` to be completed. The future resolves to None once the broker confirmed it, or to the
        exception the SDK raised; it never raises itself, and cancelling it does not stop the settlement."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if not self._queued:
            # Everything asked for until this callback runs goes in the same frames. A fresh context: the flush
            # must not run inside the first message's trace.
            if len(self._flushing) < MAX_IN_FLIGHT:
                loop.call_soon(self._flush_queued, context=contextvars.Context())
            else:  # the batch in flight flushes this one when it is done, or this timer does
                loop.call_later(HOLD_BACK_SECONDS, self._flush_queued, context=contextvars.Context())
        self._queued.append((message, future))
        return future

    def _flush_queued(self) -> None:
        batch, self._queued = self._queued, []
        if not batch:
            return
        task = asyncio.ensure_future(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if self._queued and len(self._flushing) < MAX_IN_FLIGHT:
            self._flush_queued()

    async def _flush(self, batch: list[tuple[Any, asyncio.Future[Outcome]]]) -> None:
        link = self._link()
        eligible = [(m, f) for m, f in batch if link is not None and self._eligible(m, link)]
        confirmed: set[int] = set()
        if eligible:
            try:
                confirmed = await self._settle_on_link(link, [m for m, _ in eligible])
            except Exception as error:  # the frames may not have gone out: the SDK's path decides for each
                log.debug("batched settlement failed (%s); settling one by one", error)
        rest = []
        for message, future in batch:
            if id(message) in confirmed:
                message._settled = True
                _resolve(future, None)
            else:
                rest.append((message, future))
        if rest:
            await asyncio.gather(*(self._one_by_one(m, f) for m, f in rest))

    async def _one_by_one(self, message: Any, future: asyncio.Future[Outcome]) -> None:
        try:
            await self._receiver.complete_message(message)
        except Exception as error:
            _resolve(future, error)
        else:
            _resolve(future, None)

    def _link(self) -> Any:
        from azure.core.settings import settings

        receiver = self._receiver
        if settings.tracing_implementation() is not None:  # the SDK's own settlement spans: keep its path
            return None
        if getattr(receiver, "_session", None) or not getattr(receiver, "_running", False):
            return None
        return getattr(getattr(receiver, "_handler", None), "_link", None)

    @staticmethod
    def _eligible(message: Any, link: Any) -> bool:
        """Only what the SDK would settle on the receiver link at once, with nothing to check first."""
        return (not message._settled and not message._is_deferred_message and not message._is_peeked_message
                and not message._lock_expired and message._delivery_id is not None
                and message._delivery_tag in link._received_delivery_tags)

    async def _settle_on_link(self, link: Any, messages: list[Any]) -> set[int]:
        """Returns the ids (id()) of the messages whose outcome is a confirmed `accepted`."""
        return await self._confirm(link, messages, await self._send(link, messages))

    async def _send(self, link: Any, messages: list[Any]) -> dict[int, dict[str, Any]]:
        """One unsettled disposition frame per run of consecutive delivery ids; returns the outcome entries the
        SDK fills in as they arrive, by delivery id."""
        from azure.servicebus._pyamqp.outcomes import Accepted

        by_id = {m._delivery_id: m for m in messages}
        ids = sorted(by_id)
        # Registered before the frames go out, as the SDK does: an outcome can arrive before the last write returns.
        entries: dict[int, dict[str, Any]] = {i: {"settled": False, "outcome": None} for i in ids}
        link._pending_dispositions.update(entries)
        try:
            for first, last in runs(ids):
                # The SDK's own writer: it checks and forgets the first delivery's tag; the others' tags go below.
                await link._outgoing_disposition(first, last if last != first else None, by_id[first]._delivery_tag,
                                                 False, Accepted(), None)
                for i in range(first + 1, last + 1):
                    link._received_delivery_tags.discard(by_id[i]._delivery_tag)
                self.frames += 1
                self.batched += last - first + 1
        except BaseException:
            for i in ids:
                link._pending_dispositions.pop(i, None)
            raise
        return entries

    async def _confirm(self, link: Any, messages: list[Any], entries: dict[int, dict[str, Any]]) -> set[int]:
        """The SDK's wait for every outcome, then each checked on its own."""
        from azure.servicebus._pyamqp.receiver import DEFAULT_SETTLEMENT_OUTCOME_TIMEOUT, check_disposition_outcome

        by_id = {m._delivery_id: m for m in messages}
        timeout = getattr(getattr(self._receiver, "_config", None), "timeout", None)
        try:
            # Returns once every outcome arrived, and raises on the first that is not `accepted` (each one is
            # checked again below) or when none came in time or the link detached (those are left unconfirmed).
            await link._wait_for_disposition_outcome(list(entries), timeout or DEFAULT_SETTLEMENT_OUTCOME_TIMEOUT,
                                                     ACCEPTED)
        except Exception as error:
            log.debug("batched settlement outcome: %s", error)
        confirmed = set()
        for i, entry in entries.items():
            if not entry["settled"]:
                continue
            try:
                check_disposition_outcome(i, entry["outcome"], ACCEPTED)
            except Exception:
                continue
            confirmed.add(id(by_id[i]))
        return confirmed


def runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive integers in sorted `ids`."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)

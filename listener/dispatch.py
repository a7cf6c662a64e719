"""One request → the DTS calls it needs → a typed answer.

Transient DTS errors are retried here, around the DTS call only (tenacity, exponential backoff with jitter,
bounded well inside the message lock). What to do with the answer is `settlement.decide`'s business.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from durabletask.client import OrchestrationState
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from listener.deadlines import Deadlines
from orchestrations import registry
from sbworker.core.codes import TAG_MESSAGE_ID, TERMINAL_STATUSES
from sbworker.core.contract import ApprovalRequest, RaiseRequest, Request, StartRequest
from sbworker.core.errors import one_line, rpc_code

log = logging.getLogger(__name__)

# One DTS call may not hang longer than this; a hung call is treated as transient.
CALL_TIMEOUT_SECONDS = 10.0
# Total time spent retrying transient errors for one message before giving it back to Service Bus.
TRANSIENT_RETRY_SECONDS = 20.0
# After a raise, how long to wait for the event to reach the instance's history. A raise on an instance that finished
# after our status read is accepted and the event dropped (localdts and the SDK's test backend do so; an event that
# arrives while an instance's last step runs is never processed either): only the history tells an applied decision
# from one that came too late (found by the chaos campaign, seed 2). Past it the message is not completed on trust:
# a "confirm" copy looks again later (Pending; the worker may be away, seed 17).
CONFIRM_RAISE_SECONDS = 5.0
# A call that times out means the channel may be half-open (bytes dropped, no FIN): grpc.aio keeps such a channel
# for about a minute whatever its keepalive settings (measured), so a fresh client replaces it, at most this often.
RECONNECT_AFTER_TIMEOUT_SECONDS = 10.0

TRANSIENT_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
})


class DtsClient(Protocol):
    """The slice of the async DTS client the listener uses (AsyncDurableTaskSchedulerClient satisfies it)."""

    async def schedule_new_orchestration(self, orchestrator: Any, *, input: Any = ..., instance_id: str | None = ...,
                                         start_at: Any = ..., tags: dict[str, str] | None = ...,
                                         version: str | None = ...) -> str: ...

    async def get_orchestration_state(self, instance_id: str, *, fetch_payloads: bool = ...
                                      ) -> OrchestrationState | None: ...

    async def raise_orchestration_event(self, instance_id: str, event_name: str, *, data: Any = ...) -> None: ...

    async def get_orchestration_history(self, instance_id: str) -> list[Any]: ...


@dataclass(frozen=True)
class Started:
    instance_id: str


@dataclass(frozen=True)
class AlreadyExists:
    instance_id: str


@dataclass(frozen=True)
class Raised:
    instance_id: str


@dataclass(frozen=True)
class AlreadyApplied:
    """This very event message was raised before (we are seeing a redelivery after a crash)."""

    instance_id: str


@dataclass(frozen=True)
class InstanceNotFound:
    instance_id: str


@dataclass(frozen=True)
class InstanceNotRunning:
    instance_id: str
    status: str
    raised: bool = False  # the event was raised while it ran, and it ended without taking it


@dataclass(frozen=True)
class Pending:
    """The event was raised, but the running instance has not taken it (yet): its worker may be slow or away, and
    the step it runs may still end the instance without it."""

    instance_id: str


@dataclass(frozen=True)
class InstanceGone:
    """The event was raised, then the instance was purged before its history could tell whether it took it."""

    instance_id: str


@dataclass(frozen=True)
class NotAnApprovalWorkflow:
    """The instance exists, but its orchestration never waits for an approval."""

    instance_id: str
    name: str


@dataclass(frozen=True)
class EventNotAwaited:
    """The instance exists, but its orchestration never waits for this event (see orchestrations/events.py)."""

    instance_id: str
    name: str
    event: str
    awaited: tuple[str, ...]


@dataclass(frozen=True)
class TransientFailure:
    """DTS stayed unreachable or overloaded for the whole retry budget."""

    error: str


Outcome = (Started | AlreadyExists | Raised | AlreadyApplied | InstanceNotFound | InstanceNotRunning | Pending
           | InstanceGone | NotAnApprovalWorkflow | EventNotAwaited | TransientFailure)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TimeoutError | ConnectionError) or rpc_code(error) in TRANSIENT_CODES


class Dispatcher:
    """Performs the DTS side of one message, retrying transient failures within a budget."""

    def __init__(self, client: DtsClient, *, retry_seconds: float = TRANSIENT_RETRY_SECONDS,
                 call_timeout: float = CALL_TIMEOUT_SECONDS,
                 awaits: Callable[[str | None, str], bool] = registry.awaits_event,
                 awaited: Callable[[str | None], tuple[str, ...]] = registry.events_of,
                 reconnect: Callable[[], DtsClient] | None = None,
                 confirm_seconds: float = CONFIRM_RAISE_SECONDS) -> None:
        self._client = client
        self._confirm_seconds = confirm_seconds
        self._reconnect = reconnect
        self._replaced_at = time.monotonic()
        self._retired: set[asyncio.Task[Any]] = set()
        self._awaits = awaits
        self._awaited = awaited
        self._retry_seconds = retry_seconds
        self._deadlines = Deadlines(call_timeout)  # one timer per window of calls, not per call

    @property
    def client(self) -> DtsClient:
        """The client in use now (a timed-out one is replaced; see RECONNECT_AFTER_TIMEOUT_SECONDS)."""
        return self._client

    def _timed_out(self) -> None:
        if self._reconnect is None or time.monotonic() - self._replaced_at < RECONNECT_AFTER_TIMEOUT_SECONDS:
            return
        old, self._client = self._client, self._reconnect()
        self._replaced_at = time.monotonic()
        log.warning("DTS calls time out: replacing the DTS client (its channel may be half-open)")
        close = getattr(old, "close", None)
        if close is not None:  # in the background: closing a dead channel must not hold up the message
            task = asyncio.ensure_future(close())
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            await close()

    async def dispatch(self, request: Request, message_id: str | None = None, *, redelivered: bool = False,
                       confirm: bool = False) -> Outcome:
        """`message_id` tags a raised event, so a redelivered event message can recognise its own earlier raise.

        `redelivered` (the message was delivered before) makes a raise on a running instance look for that earlier
        raise first: a crash between raise and complete must not raise the event twice. `confirm` (a confirm copy,
        whose event was raised already) only reads what became of that raise: raising again would double it.
        """
        try:
            if isinstance(request, StartRequest):
                return await self._retrying(lambda r: self._start(r, message_id), request)
            if confirm:
                return await self._retrying(lambda r: self._fate(r.instance_id, r.event_name,
                                                                 _event_key(r, message_id)), request)
            return await self._retrying(lambda r: self._raise(r, message_id, redelivered), request)
        except Exception as error:
            if is_transient(error):
                return TransientFailure(one_line(error))
            raise

    async def _retrying(self, fn: Any, request: Any) -> Outcome:
        # Nearly every message succeeds at once, and building tenacity's retry state per message cost more CPU
        # than our own handling (profiled): the first attempt goes straight through.
        started = time.monotonic()
        try:
            first: Outcome = await fn(request)
            return first
        except Exception as error:
            if not is_transient(error):
                raise
            if isinstance(error, TimeoutError):
                self._timed_out()
            log.warning("DTS call failed (%s), attempt 1; retrying", one_line(error))
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(max(0.0, self._retry_seconds - (time.monotonic() - started))),
            wait=wait_exponential_jitter(initial=0.1, max=5.0, jitter=0.5),
            retry=retry_if_exception(is_transient),
            reraise=True,
            before_sleep=self._before_retry,
        ):
            with attempt:
                outcome: Outcome = await fn(request)
                return outcome
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _start(self, request: StartRequest, message_id: str | None) -> Outcome:
        try:
            async with self._deadlines.bound():
                await self._client.schedule_new_orchestration(
                    request.orchestration, input=request.input, instance_id=request.instance_id,
                    start_at=request.start_at, tags=_tags(request, message_id),
                    version=registry.version_of(request.orchestration),
                )
        except Exception as error:
            if rpc_code(error) == grpc.StatusCode.ALREADY_EXISTS:
                return AlreadyExists(request.instance_id)
            raise
        return Started(request.instance_id)

    async def _raise(self, request: RaiseRequest, message_id: str | None, redelivered: bool) -> Outcome:
        message_id = _event_key(request, message_id)
        # Read first: a raise on a finished instance is accepted silently by some backends, and we want that
        # case visible in the dead-letter queue, not swallowed.
        async with self._deadlines.bound():
            state = await self._client.get_orchestration_state(request.instance_id, fetch_payloads=False)
        if state is None:
            return InstanceNotFound(request.instance_id)
        name = request.event_name
        if not self._awaits(state.name, name):
            if isinstance(request, ApprovalRequest):
                return NotAnApprovalWorkflow(request.instance_id, state.name or "?")
            return EventNotAwaited(request.instance_id, state.name or "?", name, self._awaited(state.name))
        terminal = state.runtime_status in TERMINAL_STATUSES
        if (terminal or redelivered) and message_id and await self._was_raised(request.instance_id, name, message_id):
            return AlreadyApplied(request.instance_id)
        if terminal:
            return InstanceNotRunning(request.instance_id, state.runtime_status.name)
        data = {**request.event_data(), "message_id": message_id} if message_id else request.event_data()
        try:
            async with self._deadlines.bound():
                await self._client.raise_orchestration_event(request.instance_id, name, data=data)
        except Exception as error:
            code = rpc_code(error)
            if code == grpc.StatusCode.NOT_FOUND:
                return InstanceNotFound(request.instance_id)
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                return InstanceNotRunning(request.instance_id, "not running")
            raise
        return await self._confirm_raised(request.instance_id, name, message_id)

    async def _confirm_raised(self, instance_id: str, name: str, message_id: str | None) -> Outcome:
        """Raised once the event is in the history; InstanceNotRunning if the instance finished without it (our
        status read saw it running, then another decision, event or its timer ended it before the event was taken).

        Still running without it after the confirmation bound (the worker is slow or away), or a read that keeps
        failing: Pending, which a confirm copy settles later. Never an error: the raise itself was accepted, and
        retrying the whole message would raise it again."""
        if not message_id:
            return Raised(instance_id)
        deadline = time.monotonic() + self._confirm_seconds
        pause = 0.02
        try:
            while True:
                fate = await self._fate(instance_id, name, message_id)
                if not isinstance(fate, Pending) or time.monotonic() >= deadline:
                    return fate
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
        except Exception as error:
            if not is_transient(error):
                raise
            return Pending(instance_id)

    async def _fate(self, instance_id: str, name: str, message_id: str | None) -> Outcome:
        """What became of an event raised earlier, read and never raised again: in the history (Raised), the
        instance ended without it (InstanceNotRunning), or still waiting on a running instance (Pending). The status
        is read before the history, so an instance that takes the event between the two reads shows it."""
        async with self._deadlines.bound():
            state = await self._client.get_orchestration_state(instance_id, fetch_payloads=False)
        if state is None:
            return InstanceGone(instance_id)
        if not message_id or await self._was_raised(instance_id, name, message_id):
            return Raised(instance_id)
        if state.runtime_status in TERMINAL_STATUSES:
            return InstanceNotRunning(instance_id, state.runtime_status.name, raised=True)
        return Pending(instance_id)

    async def _was_raised(self, instance_id: str, name: str, message_id: str) -> bool:
        """Did an event `name` carrying this message id reach the instance's history?"""
        async with self._deadlines.bound():
            events = await self._client.get_orchestration_history(instance_id)
        for event in events:
            if getattr(event, "name", None) != name or not getattr(event, "input", None):
                continue
            try:
                data = json.loads(event.input)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("message_id") == message_id:
                return True
        return False

    def _before_retry(self, state: Any) -> None:
        if state.outcome is not None and isinstance(state.outcome.exception(), TimeoutError):
            self._timed_out()
        _log_retry(state)


def _event_key(request: RaiseRequest, message_id: str | None) -> str | None:
    """What a raised event carries as its `message_id`: the CloudEvents id is a CloudEvent's idempotency key."""
    return request.cloudevent.id if request.cloudevent is not None else message_id


def _tags(request: StartRequest, message_id: str | None) -> dict[str, str] | None:
    """The message that started an instance (the dashboard links them), and what its CloudEvent said."""
    tags = {TAG_MESSAGE_ID: message_id} if message_id else {}
    if request.cloudevent is not None:
        tags.update(request.cloudevent.tags())
    return tags or None


def _log_retry(state: Any) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("DTS call failed (%s), attempt %d; retrying", one_line(error) if error else "?", state.attempt_number)

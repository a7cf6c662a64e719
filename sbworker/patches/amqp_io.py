"""Settlement must not wait for idle socket reads: two fixes to the aio Service Bus SDK's AMQP I/O.

azure-servicebus 7.15 (aio, pyamqp) guards its socket with one lock for reads *and* writes, and a read holds
that lock for up to the socket timeout (ours: 20 ms, sbworker.patches.RECEIVER_SOCKET_TIMEOUT) while it waits for
a frame. Measured with bench.msgtrace at the defaults (32 concurrent, prefetch 100; 2026-11-29, medians):
1. writing a disposition (`complete_message`) waited 16-18 ms for the receive call's idle read to time out;
2. the SDK then waits for the broker's outcome by reading the socket in turns with every other settler and the
   receive call; a settler whose outcome another reader had already taken still read for a full socket timeout
   (~10 ms median at 50 msgs/s once 1. was fixed).
Together they were 20 of the 21 ms a message spent between receipt and settlement at 50 msgs/s, and they halved
throughput from a backlog.

`install()` (through `sbworker.patches.install`, behind its version gate) changes only *when* the SDK touches the
socket:
- writes take a lock of their own, so they serialise with each other but never wait behind a read (asyncio
  streams read and write independently; every frame is still written whole by one `write` call);
- a settlement waiting for its outcome while another coroutine reads sleeps until that read delivers its outcome
  (an event set when the disposition frame is processed) or OUTCOME_READ_WAIT passes; when nobody reads, it reads
  itself for at most OUTCOME_READ_WAIT. It never sits in the read queue for an outcome that has already arrived.
The outcome is still awaited and checked by the SDK's own loop: a lost lock still raises, as before.
Measured (bench.breakdown, 32 concurrent, prefetch 100, 2026-11-29): receipt -> settled at 50 msgs/s 21.8 ms ->
1.2 ms median; from a backlog 914 -> 2,130 starts/s.

A third part changes no timing: the SDK bounds each frame read with `asyncio.wait_for`, which on Python 3.11 runs
the read as a task of its own, with a future and a timer to wait for it: one task per frame received, about one
per message from a backlog. `receive_frame` bounds the same read with `asyncio.timeout` in the caller's task
(READ_IN_CALLER); a read that times out is cancelled and keeps what it had read exactly as before (the SDK's
`read` buffers a partial frame on cancellation, whichever task it runs in).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from typing import Any

log = logging.getLogger(__name__)

WRITE_LOCK = "amqp_io.write_lock"
OUTCOME_WAIT = "amqp_io.outcome_wait"
READ_IN_CALLER = "amqp_io.read_in_caller"
# How long one read waits while a settlement waits for its outcome (the broker answers within a round trip; a
# longer read only holds the socket from the other waiters). 0.5 ms measured no better and costs more wake-ups.
OUTCOME_READ_WAIT = 0.002

# Set while a settlement waits for its outcome: the event that its disposition frame's arrival sets.
_awaiting_outcome: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("sbworker_awaiting_outcome",
                                                                                        default=None)


def install() -> list[str]:
    """Patch the aio SDK's transport write, frame read and outcome wait; returns the names of the parts installed.

    Called once, by `sbworker.patches.install`, and only on a verified SDK version; a part the SDK no longer has
    is skipped (and so missing from the list the start-up line and /readyz report).
    """
    from azure.servicebus._pyamqp.aio import _connection_async, _receiver_async, _transport_async

    installed = []
    transport = _transport_async.AsyncTransport
    if hasattr(transport, "_write") and hasattr(transport, "write"):
        transport.write = _write  # type: ignore[method-assign]
        installed.append(WRITE_LOCK)
    mixin = _transport_async.AsyncTransportMixin
    if hasattr(mixin, "receive_frame") and hasattr(mixin, "read") and \
            all(hasattr(_transport_async, name) for name in ("decode_frame", "decode_empty_frame")):
        mixin.receive_frame = _receive_frame  # type: ignore[method-assign]
        installed.append(READ_IN_CALLER)
    link, connection = _receiver_async.ReceiverLink, _connection_async.Connection
    if all(hasattr(link, a) for a in ("_wait_for_disposition_outcome", "_incoming_disposition")) \
            and hasattr(connection, "listen"):
        link._wait_for_disposition_outcome = _outcome_wait(link._wait_for_disposition_outcome)  # type: ignore[method-assign]
        link._incoming_disposition = _incoming(link._incoming_disposition)  # type: ignore[method-assign]
        connection.listen = _listen(connection.listen)  # type: ignore[method-assign]
        installed.append(OUTCOME_WAIT)
    return installed


async def _write(self: Any, s: bytes) -> None:
    """AsyncTransport.write with a write-only lock: the SDK's own write, minus waiting for the read lock."""
    from azure.servicebus._pyamqp.aio._transport_async import _UNAVAIL, get_errno

    lock = self.__dict__.get("_sbworker_write_lock")
    if lock is None:
        lock = self._sbworker_write_lock = asyncio.Lock()
    async with lock:
        try:
            await self._write(s)
        except TimeoutError:
            raise
        except OSError as error:  # as the SDK does: a failed write leaves the transport unusable
            if get_errno(error) not in _UNAVAIL:
                self.connected = False
            raise


async def _receive_frame(self: Any, timeout: float | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """AsyncTransportMixin.receive_frame, its read bounded in the calling task rather than in a task of its own."""
    from azure.servicebus._pyamqp.aio._transport_async import decode_empty_frame, decode_frame

    try:
        async with asyncio.timeout(timeout):
            header, channel, payload = await self.read(**kwargs)
        return channel, decode_frame(payload) if payload else decode_empty_frame(header)
    except (TimeoutError, asyncio.IncompleteReadError):  # socket.timeout and asyncio.TimeoutError are TimeoutError
        return None, None


def _outcome_wait(original: Any) -> Any:
    async def wait_for_outcome(self: Any, delivery_ids: list[int], *args: Any, **kwargs: Any) -> Any:
        arrived = asyncio.Event()
        waiting = self.__dict__.setdefault("_sbworker_outcome_events", {})
        for delivery_id in delivery_ids:
            waiting[delivery_id] = arrived
        token = _awaiting_outcome.set(arrived)
        try:
            return await original(self, delivery_ids, *args, **kwargs)
        finally:
            _awaiting_outcome.reset(token)
            for delivery_id in delivery_ids:
                waiting.pop(delivery_id, None)

    return wait_for_outcome


def _incoming(original: Any) -> Any:
    async def incoming_disposition(self: Any, frame: Any) -> None:
        await original(self, frame)
        waiting = self.__dict__.get("_sbworker_outcome_events")
        if waiting:
            for delivery_id, pending in self._pending_dispositions.items():
                if pending.get("settled") and delivery_id in waiting:
                    waiting[delivery_id].set()

    return incoming_disposition


def _listen(original: Any) -> Any:
    async def listen(self: Any, wait: float | bool = False, batch: int = 1, **kwargs: Any) -> Any:
        arrived = _awaiting_outcome.get()
        if wait is False and arrived is not None:
            lock = getattr(getattr(self, "_transport", None), "socket_lock", None)
            if isinstance(lock, asyncio.Lock) and lock.locked():
                # Another coroutine is reading: sleep until a read brings one of our outcomes (or a short while
                # passes), then let the caller check, instead of queueing for a read of our own. The event is
                # cleared each time: a wait for several outcomes (sbworker/patches/settle_batch.py) would otherwise
                # find it set after the first and spin without ever yielding to the read it waits for.
                if not arrived.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(OUTCOME_READ_WAIT):
                            await arrived.wait()
                arrived.clear()
                return None
            wait = OUTCOME_READ_WAIT
        return await original(self, wait, batch, **kwargs)

    return listen

"""Bench-only: `sbworker run` with a timestamp at every step of each message, to see where its time goes.

`python -m bench.msgtrace run --no-worker` runs the real service entry point after wrapping, in this process
only, the functions each message passes through: the SDK's buffer callback (frame arrived), `receive_messages`
(handed to us), `Pipeline.handle` (its task starts), `Pipeline.parse`, `Dispatcher.dispatch` (the DTS call),
`Settler.settle`, the disposition frame going out, and `complete_message` returning (the broker's outcome read back).
Nothing in listener/ knows about it. At exit the records go, as JSON, to the file named by BENCH_TRACE_PATH.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# The steps, in the order a message passes them; a record is one perf_counter timestamp per step.
STEPS = ("arrived", "received", "handle", "parse_start", "parse_end", "dts_start", "dts_end", "settle_start",
         "disposition_sent", "settle_end")

_open: dict[bytes, dict[str, float]] = {}
_done: list[dict[str, float]] = []
_current: dict[int, bytes] = {}  # id(asyncio task) → delivery tag of the message it handles


def _now() -> float:
    return time.perf_counter()


def _tag(message: Any) -> bytes:
    return bytes(getattr(message, "_delivery_tag", b"") or b"")


def _task_id() -> int:
    import asyncio

    task = asyncio.current_task()
    return id(task) if task is not None else 0


def _mark(tag: bytes, step: str) -> None:
    record = _open.get(tag)
    if record is not None and step not in record:
        record[step] = _now()


def _wrap_async(owner: Any, name: str, before: Callable[..., None] | None = None,
                after: Callable[..., None] | None = None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        result = await original(*args, **kwargs)
        if after is not None:
            after(result, *args, **kwargs)
        return result

    setattr(owner, name, wrapper)


def install() -> None:
    """Wrap the SDK and listener functions a message goes through (idempotent per process)."""
    from azure.servicebus._pyamqp.aio._client_async import ReceiveClientAsync
    from azure.servicebus._pyamqp.aio._receiver_async import ReceiverLink
    from azure.servicebus.aio import ServiceBusReceiver
    from azure.servicebus.aio._transport._pyamqp_transport_async import PyamqpTransportAsync

    from listener.dispatch import Dispatcher
    from listener.pipeline import Pipeline
    from listener.settler import Settler
    from sbworker.patches.settle_batch import SettlementBatch

    # A transfer frame reaches one of these two callbacks (the second only without prefetch).
    arrived_client = ReceiveClientAsync._message_received_async

    async def arrived(client: Any, frame: Any, message: Any) -> None:
        _open.setdefault(bytes(frame[2]), {})["arrived"] = _now()
        await arrived_client(client, frame, message)

    ReceiveClientAsync._message_received_async = arrived  # type: ignore[method-assign]
    arrived_released = PyamqpTransportAsync.enhanced_message_received_async

    async def arrived_no_prefetch(receiver: Any, frame: Any, message: Any) -> None:
        _open.setdefault(bytes(frame[2]), {})["arrived"] = _now()
        await arrived_released(receiver, frame, message)

    PyamqpTransportAsync.enhanced_message_received_async = staticmethod(arrived_no_prefetch)  # type: ignore[method-assign]

    def received(result: list[Any], *args: Any, **kwargs: Any) -> None:
        t = _now()
        for message in result:
            _open.setdefault(_tag(message), {"arrived": t})["received"] = t

    _wrap_async(ServiceBusReceiver, "receive_messages", after=received)

    def handle(_self: Any, _receiver: Any, _renewer: Any, message: Any) -> None:
        _current[_task_id()] = _tag(message)
        _mark(_tag(message), "handle")

    def handled(*_args: Any, **_kwargs: Any) -> None:
        _current.pop(_task_id(), None)

    _wrap_async(Pipeline, "handle", before=handle, after=handled)

    parse_original = Pipeline.parse

    def parse(self: Any, delivery: Any) -> Any:
        _mark(_tag(delivery.message), "parse_start")
        try:
            return parse_original(self, delivery)
        finally:
            _mark(_tag(delivery.message), "parse_end")

    Pipeline.parse = parse  # type: ignore[method-assign]

    _wrap_async(Dispatcher, "dispatch",
                before=lambda *_a, **_k: _mark(_current.get(_task_id(), b""), "dts_start"),
                after=lambda *_a, **_k: _mark(_current.get(_task_id(), b""), "dts_end"))

    def settle_start(_self: Any, delivery: Any, *_a: Any, **_k: Any) -> None:
        _mark(_tag(delivery.message), "settle_start")

    def settle_end(_result: Any, _self: Any, delivery: Any, *_a: Any, **_k: Any) -> None:
        tag = _tag(delivery.message)
        _mark(tag, "settle_end")
        record = _open.pop(tag, None)
        if record is not None:
            _done.append(record)

    _wrap_async(Settler, "settle", before=settle_start, after=settle_end)

    def disposition_sent(_result: Any, _self: Any, _first: int, _last: Any, delivery_tag: bytes,
                         *_a: Any, **_k: Any) -> None:
        _mark(bytes(delivery_tag), "disposition_sent")

    # The SDK's own settlements (dead-letters, abandons, and every settlement on an unverified SDK)...
    _wrap_async(ReceiverLink, "_outgoing_disposition", after=disposition_sent)

    def batch_sent(_result: Any, _self: Any, _link: Any, messages: list[Any]) -> None:
        for message in messages:
            _mark(_tag(message), "disposition_sent")

    # ...and the batched completions, whose frames name only the first delivery of each run.
    _wrap_async(SettlementBatch, "_send", after=batch_sent)


def _dump() -> None:
    path = os.environ.get("BENCH_TRACE_PATH")
    if path:
        with open(path, "w") as f:
            json.dump({"steps": STEPS, "records": [[r.get(s) for s in STEPS] for r in _done]}, f)


def main(argv: list[str]) -> int:
    install()
    atexit.register(_dump)
    from sbworker.cli import main as sbworker_main

    return sbworker_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

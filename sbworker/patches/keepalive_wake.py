"""Closing a Service Bus client ends its keep-alive loop at once, instead of after up to a second.

azure-servicebus 7.15 gives each connection a keep-alive loop (a task in the aio client, a thread in the sync one)
that pings the broker every 30 s and otherwise sleeps one second at a time. Closing the client sets its shutdown
flag and then waits for that loop to notice it, which is after its current one-second sleep: every close of a
receiver, sender or client took 0.5 s on average and up to 1 s, although the broker had answered everything. That
second is on the path of every command-line call (`sbworker publish` and `dlq` close before they exit), of each
listener's stop, and of each test's teardown.

The patch makes only that sleep wakeable: the module's `asyncio` (aio) or `time` (sync) is a copy
(`stand_in.with_sleep`) whose `sleep(1)`, when called from the keep-alive loop itself, waits on something the
client's close sets; every other call goes to the real module. The close is wrapped to set the SDK's own shutdown
flag first (what it does itself as its first step) and then wake the sleeper, so the loop's next check sees the
flag and returns. Pings, their interval and everything else the loop does are unchanged. Installed only when each
module's sleep is still the loop's one-second pause and the close still starts by setting that flag (checked in
their source).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import CodeType, ModuleType
from typing import Any

from sbworker.patches.stand_in import with_sleep

KEEPALIVE_WAKE = "client.keepalive_wake"
SDK_PAUSE = 1  # the keep-alive loop's sleep between two looks at its clock
_WAKE = "_sbworker_keepalive_wake"  # on a client: the future (aio) or event (sync) its close sets

woken = 0  # closes that cut a keep-alive pause short (read by the tests: the patch still has its effect)
_installed = False


def _asyncio_for(loop_code: CodeType) -> ModuleType:
    """The `asyncio` module as the aio client module sees it, but for the keep-alive loop's pause."""

    def sleep(delay: float, result: Any = None) -> Awaitable[Any]:
        caller = sys._getframe(1)
        if delay == SDK_PAUSE and caller.f_code is loop_code:
            return _nap(caller.f_locals["self"], delay)
        return asyncio.sleep(delay, result)

    return with_sleep(asyncio, sleep)


def _time_for(loop_code: CodeType) -> ModuleType:
    """The `time` module as the sync client module sees it, but for the keep-alive thread's pause."""

    def sleep(delay: float) -> None:
        caller = sys._getframe(1)
        if delay == SDK_PAUSE and caller.f_code is loop_code:
            client = caller.f_locals["self"]
            if not client._shutdown:
                client.__dict__.setdefault(_WAKE, threading.Event()).wait(delay)
            return
        time.sleep(delay)

    return with_sleep(time, sleep)


async def _nap(client: Any, delay: float) -> None:
    if client._shutdown:  # the close came while the loop was pinging: its wake found nothing to wake
        return
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] = loop.create_future()
    setattr(client, _WAKE, wake)
    timer = loop.call_later(delay, _settle, wake)
    try:
        await wake
    finally:
        timer.cancel()
        client.__dict__.pop(_WAKE, None)


def _settle(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


def _wake(client: Any) -> None:
    global woken
    wake = client.__dict__.get(_WAKE)
    if isinstance(wake, asyncio.Future) and not wake.done():
        wake.set_result(None)
        woken += 1
    elif isinstance(wake, threading.Event) and not wake.is_set():
        wake.set()
        woken += 1


def _waking_close_async(close: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def close_async(self: Any) -> None:
        self._shutdown = True
        _wake(self)
        await close(self)

    close_async.__wrapped__ = close  # type: ignore[attr-defined]
    return close_async


def _waking_close(close: Callable[[Any], None]) -> Callable[[Any], None]:
    def close_sync(self: Any) -> None:
        self._shutdown = True
        self.__dict__.setdefault(_WAKE, threading.Event())
        _wake(self)
        close(self)

    close_sync.__wrapped__ = close  # type: ignore[attr-defined]
    return close_sync


def _reads_as_expected(module: Any, loop: Any, close: Any, sleep_call: str) -> bool:
    try:
        whole, looping, closing = inspect.getsource(module), inspect.getsource(loop), inspect.getsource(close)
    except (OSError, TypeError):
        return False
    first_statement = closing.split('"""')[-1].strip().splitlines()[0].strip()
    return (sleep_call in looping and "while self._connection and not self._shutdown" in looping
            and first_statement == "self._shutdown = True" and whole.count(sleep_call) == 1)


def install() -> list[str]:
    """Patch both client modules if they read as expected; returns what was installed."""
    from azure.servicebus._pyamqp import client as sync_module
    from azure.servicebus._pyamqp.aio import _client_async as aio_module

    global _installed
    if _installed:
        return [KEEPALIVE_WAKE]
    aio_client, sync_client = aio_module.AMQPClientAsync, sync_module.AMQPClient
    try:
        aio_loop, sync_loop = aio_client._keep_alive_async, sync_client._keep_alive
        aio_close, sync_close = aio_client.close_async, sync_client.close
    except AttributeError:
        return []
    if aio_module.asyncio is not asyncio or sync_module.time is not time \
            or not _reads_as_expected(aio_module, aio_loop, aio_close, f"await asyncio.sleep({SDK_PAUSE})") \
            or not _reads_as_expected(sync_module, sync_loop, sync_close, f"time.sleep({SDK_PAUSE})"):
        return []
    aio_module.asyncio = _asyncio_for(aio_loop.__code__)
    sync_module.time = _time_for(sync_loop.__code__)
    setattr(aio_client, "close_async", _waking_close_async(aio_close))  # noqa: B010 (mypy forbids assigning a method)
    setattr(sync_client, "close", _waking_close(sync_close))  # noqa: B010
    _installed = True
    return [KEEPALIVE_WAKE]

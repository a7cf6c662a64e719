"""A receiver that no longer receives: told apart from an idle one, and raised as a connection error.

azure-servicebus 7.15's AMQP receive client shuts itself down for good when a step of its connection raises
ValueError (it logs "Timeout reached, closing receiver." at INFO), and the receiver keeps calling it: every receive
then returns [] without touching the socket and without yielding to the event loop, so nothing else on the loop
runs, the listener's watchdog included. tests/reliability/test_network_faults.py stalled that way once after
connection resets: 54 messages waiting, none received, a core busy for minutes. An idle receive waits its whole
`max_wait_time`; one that comes back empty at once, call after call, is this.
"""

from __future__ import annotations

import asyncio

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver

# Empty receive calls in a row that came back without waiting, after which the receiver is taken for dead (they take
# microseconds each: the count only keeps a single odd call from ending a connection).
DEAD_RECEIVER_CALLS = 20


class DeadReceiver(ConnectionError):
    """Raised where a connection error would be: the listener (or the session slot) opens a new receiver."""


class Receiving:
    """One receiver's receive calls, watched for the dead state above."""

    def __init__(self, receiver: ServiceBusReceiver) -> None:
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._at_once = 0  # empty calls in a row that did not wait

    async def receive(self, count: int, wait: float) -> list[ServiceBusReceivedMessage]:
        called = self._loop.time()
        messages = await self._receiver.receive_messages(max_message_count=count, max_wait_time=wait)
        if messages or self._loop.time() - called >= wait / 2:
            self._at_once = 0
            return messages
        self._at_once += 1
        if self._at_once >= DEAD_RECEIVER_CALLS:
            raise DeadReceiver(f"{self._at_once} receive calls in a row returned nothing without waiting: the "
                               "receiver no longer receives")
        await asyncio.sleep(0)  # meanwhile, let the rest of the loop run
        return messages

"""The receiver's watchdog: a link with no sign of life is probed, and a silent one ends the session.

azure-servicebus gives its AMQP layer no idle timeout: a half-open link (no FIN, bytes dropped) would be waited on
for ever, every receive returning nothing. A link with no sign of life (a message received or settled, a probe
answered) for LIVENESS_IDLE_SECONDS is probed with a peek; a probe unanswered within LIVENESS_TIMEOUT_SECONDS
raises, so the session ends and the listener reconnects (detection within about 25 s).
"""

from __future__ import annotations

import asyncio
import time

from azure.servicebus.aio import ServiceBusReceiver

LIVENESS_IDLE_SECONDS = 10.0
LIVENESS_TIMEOUT_SECONDS = 10.0


class Liveness:
    def __init__(self) -> None:
        self._last_alive = time.monotonic()

    def alive(self) -> None:
        """A sign of life: a message arrived or was settled."""
        self._last_alive = time.monotonic()

    async def watch(self, receiver: ServiceBusReceiver) -> None:
        """Run until the link goes silent, then raise ConnectionError."""
        self.alive()
        while True:
            await asyncio.sleep(LIVENESS_IDLE_SECONDS / 2)
            if time.monotonic() - self._last_alive < LIVENESS_IDLE_SECONDS:
                continue
            try:
                await asyncio.wait_for(receiver.peek_messages(max_message_count=1), LIVENESS_TIMEOUT_SECONDS)
            except TimeoutError:
                raise ConnectionError(f"Service Bus did not answer for {LIVENESS_TIMEOUT_SECONDS:.0f}s: the link "
                                      "is half-open") from None
            self.alive()

"""Peeking a session-enabled queue or subscription without taking one of its sessions.

Service Bus lets any client peek such an entity: the peek goes over the entity's management link, and only a
*receive* link needs a session (Azure/azure-sdk-for-net#10722: "Peeking a session entity without using the
GetSessionReceiver method will work, but Receive fails"; the docs' Message sessions page says clients may still
peek). azure-servicebus 7.15 opens the receive link before every management call, and the entity refuses it
("It is not possible for an entity that requires sessions to create a non-sessionful message receiver"). A session
receiver would peek only its own session, and would take that session from the listener while it looks.

`open_for_peek` opens a plain receiver's connection, session and authorisation but not its receive link, and marks
it open; the SDK's own `peek_messages` then goes straight to the management link, without a session id, so it
sees every session's messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

PEEK_WITHOUT_LINK = "receiver.peek_without_link"
# How long the token exchange may take before the open is given up (the SDK's own default is 60 s).
AUTH_TIMEOUT_SECONDS = 30.0


def available() -> list[str]:
    """The name of this patch if the SDK still has what it uses."""
    from azure.servicebus.aio import ServiceBusReceiver, _async_utils

    return [PEEK_WITHOUT_LINK] if (hasattr(ServiceBusReceiver, "_create_handler")
                                   and hasattr(_async_utils, "create_authentication")) else []


async def open_for_peek(receiver: Any) -> None:
    """Open `receiver` (a plain asyncio receiver, not yet opened) for management calls only."""
    from azure.servicebus.aio._async_utils import create_authentication

    if receiver._running:
        return
    receiver._create_handler(await create_authentication(receiver))
    handler = receiver._handler
    # Its keep-alive reads the receive link's credit, and this receiver never opens that link.
    handler._keep_alive_interval = 0
    await handler.open_async()
    async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
        while not await handler.auth_complete_async():
            await asyncio.sleep(0.005)
    receiver._running = True

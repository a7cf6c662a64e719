"""Helpers for driving localbus with the real azure-servicebus SDK."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusSender

from localbus import LocalBus


def client(bus: LocalBus, **kwargs: Any) -> ServiceBusClient:
    return ServiceBusClient.from_connection_string(bus.connection_string, **kwargs)


def sender(sb: ServiceBusClient, queue: str) -> ServiceBusSender:
    """A sender without the SDK's keep-alive thread (unpatched, its join makes close() take ~0.5 s)."""
    return sb.get_queue_sender(queue, keep_alive=None)


def bodies(messages: list[ServiceBusReceivedMessage]) -> list[str]:
    return [str(m) for m in messages]


class FakeCredential:
    """A TokenCredential standing in for managed identity / Entra ID: hands out numbered fake JWTs."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(f"fake-jwt-{len(self.scopes)}", int(time.time()) + 3600)


class AsyncFakeCredential(FakeCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # type: ignore[override]
        return super().get_token(*scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncFakeCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

"""Entra ID credentials for DTS and Service Bus: managed identity in Azure, DefaultAzure for people."""

from __future__ import annotations

from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential

from sbworker.core.config import Auth


def sync_credential(auth: Auth, client_id: str | None) -> TokenCredential | None:
    """The credential for a sync client (the DTS worker and sync client need this kind); None = anonymous."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if auth is Auth.MANAGED_IDENTITY:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if auth is Auth.DEFAULT_AZURE:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return None


def async_credential(auth: Auth, client_id: str | None) -> AsyncTokenCredential | None:
    """The credential for an asyncio client (the Service Bus receiver, the async DTS client)."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if auth is Auth.MANAGED_IDENTITY:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if auth is Auth.DEFAULT_AZURE:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return None

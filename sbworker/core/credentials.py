"""Entra ID credentials for DTS and Service Bus: managed identity in Azure, DefaultAzure for people."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sbworker.core.config import Auth

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential


def sync_credential(auth: Auth, client_id: str | None) -> TokenCredential | None:
    """The credential for a sync client (the DTS worker and sync client need this kind); None = anonymous."""
    return sync_entra(auth, client_id) if auth in (Auth.MANAGED_IDENTITY, Auth.DEFAULT_AZURE) else None


def async_credential(auth: Auth, client_id: str | None) -> AsyncTokenCredential | None:
    """The credential for an asyncio client (the Service Bus receiver, the async DTS client); None = anonymous."""
    return async_entra(auth, client_id) if auth in (Auth.MANAGED_IDENTITY, Auth.DEFAULT_AZURE) else None


def sync_entra(auth: Auth, client_id: str | None) -> TokenCredential:
    """Managed identity (a user-assigned one with `client_id`), or DefaultAzureCredential."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if auth is Auth.MANAGED_IDENTITY:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)


def async_entra(auth: Auth, client_id: str | None) -> AsyncTokenCredential:
    """`sync_entra`, for asyncio clients."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if auth is Auth.MANAGED_IDENTITY:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)

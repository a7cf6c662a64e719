"""The one place where settings and credentials become SDK clients.

Everything else receives the clients it needs as arguments. A `credential` left at None is the one the settings
name (managed identity, DefaultAzure, or none for a local emulator); tests pass a fake one to exercise the Entra
ID paths against local peers.

Each function imports the SDK it builds with: a command that talks to one service does not load the other's SDK
(azure-servicebus is about 0.13 s of CPU to import, durabletask with gRPC about 0.1 s).
"""

from __future__ import annotations

import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any

from sbworker import patches
from sbworker.core import credentials
from sbworker.core.config import ConnectionString, DtsSettings, PayloadStorage, ServiceBusSettings, WorkerSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.servicebus import ServiceBusClient as SyncServiceBusClient
    from azure.servicebus.aio import ServiceBusClient
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
    from durabletask.grpc_options import GrpcChannelOptions

    from sbworker.core.worker_guard import WorkerGuard

# gRPC's default reconnect backoff grows to 120 s: after a DTS blip we would sit idle for minutes. Cap it.
CHANNEL_RAW_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # A half-open link (no FIN, bytes dropped) would otherwise be kept for ever, every call timing out on it.
    # Ping every 10 s; no answer within 5 s closes the connection and the channel reconnects (detection <= 15 s).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 10_000),
    # Each client its own connection: a client made to replace a silent one (listener.dispatch) must not be handed
    # the same half-open connection from gRPC's process-wide subchannel pool.
    ("grpc.use_local_subchannel_pool", 1),
)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings the Service Bus SDK would build, built once: it otherwise reads the whole CA bundle again for
    every connection (157 ms of CPU each, measured 2026-12-06, even where the connection then uses no TLS), and
    session mode opens a connection per session it accepts. Certificates and host names are checked as before."""
    import certifi

    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certifi.where())


def dts_worker(settings: DtsSettings, *, credential: TokenCredential | None = None,
               guard: WorkerGuard | None = None, concurrency: WorkerSettings | None = None
               ) -> DurableTaskSchedulerWorker:
    """A worker with nothing registered yet (the service registers the orchestrations); not started.

    Every worker runs behind a `WorkerGuard` (one work item cannot stop it); pass one to read its health.
    `concurrency` None keeps the SDK's own defaults.
    """
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
    from durabletask.grpc_options import GrpcWorkerResiliencyOptions
    from durabletask.worker import ConcurrencyOptions

    from sbworker.core.worker_guard import WorkerGuard

    cred = credential or credentials.sync_credential(settings.auth, settings.client_id)
    options = None if concurrency is None else ConcurrencyOptions(
        maximum_concurrent_orchestration_work_items=concurrency.max_concurrent_orchestrations,
        maximum_concurrent_activity_work_items=concurrency.max_concurrent_activities,
        maximum_thread_pool_workers=concurrency.threads,
    )
    cap = settings.worker_reconnect_cap_seconds
    resiliency = None if cap is None else GrpcWorkerResiliencyOptions(
        reconnect_backoff_base_seconds=min(1.0, cap), reconnect_backoff_cap_seconds=cap)
    return DurableTaskSchedulerWorker(token_credential=cred, interceptors=[guard or WorkerGuard()],
                                      concurrency_options=options, resiliency_options=resiliency,
                                      **_dts_options(settings, "worker", cred))


def dts_client(settings: DtsSettings, *, credential: TokenCredential | None = None) -> DurableTaskSchedulerClient:
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient

    cred = credential or credentials.sync_credential(settings.auth, settings.client_id)
    return DurableTaskSchedulerClient(token_credential=cred, **_dts_options(settings, "client", cred))


def dts_async_client(
    settings: DtsSettings, *, credential: AsyncTokenCredential | None = None, emit_trace_spans: bool = True,
    minimal_stack: bool = False,
) -> AsyncDurableTaskSchedulerClient:
    """`emit_trace_spans=False` when nothing would record them: the SDK then skips building a span per call.

    `minimal_stack` is for the listener's client, whose every call is small both ways (a start or an event within
    MAX_INPUT_BYTES / MAX_EVENT_BYTES, checked before the call; states read without payloads): gRPC then leaves out
    the filters that enforce message-size limits and run transparent retries (`grpc.minimal_stack`), about 4% of
    the listener's CPU per message from a backlog (README "Performance"). Transparent retries only resend a call
    that never reached the server; without them that call fails UNAVAILABLE, which the listener retries itself.
    """
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

    cred = credential or credentials.async_credential(settings.auth, settings.client_id)
    store_cred = credentials.sync_credential(settings.auth, settings.client_id) if settings.payload_storage else None
    options = _dts_options(settings, "client", store_cred)
    if minimal_stack:
        options["channel_options"].raw_options.append(("grpc.minimal_stack", 1))
    client = AsyncDurableTaskSchedulerClient(token_credential=cred, **options)
    if not emit_trace_spans:
        patches.without_trace_spans(client)
    return client


def _dts_options(settings: DtsSettings, component: str, credential: Any) -> dict[str, Any]:
    # Every DTS client and worker is made here: its paging patch is in force before the first list.
    patches.install(patches.DURABLETASK)
    options: dict[str, Any] = {
        "host_address": settings.endpoint,
        "taskhub": settings.taskhub,
        "secure_channel": settings.secure,
        "channel_options": channel_options(settings),
        # Their output goes through our logging configuration (durabletask at WARNING unless LOG_LEVEL=DEBUG).
        "logger": logging.getLogger(f"durabletask.{component}"),
    }
    if settings.payload_storage is not None:
        options["payload_store"] = payload_store(settings.payload_storage, credential)
    return options


def channel_options(settings: DtsSettings) -> GrpcChannelOptions:
    """CHANNEL_RAW_OPTIONS, with DTS's message limits: send at most what DTS takes, receive what DTS may send."""
    from durabletask.grpc_options import GrpcChannelOptions

    from sbworker.core.worker_guard import DTS_MESSAGE_BYTES

    return GrpcChannelOptions(raw_options=list(CHANNEL_RAW_OPTIONS),
                              max_send_message_length=DTS_MESSAGE_BYTES,
                              max_receive_message_length=settings.max_receive_bytes)


def payload_store(storage: PayloadStorage, credential: Any) -> Any:
    """The SDK's Azure Blob payload store (azure-storage-blob is imported only when storage is configured)."""
    from durabletask.extensions.azure_blob_payloads import BlobPayloadStore, BlobPayloadStoreOptions

    return BlobPayloadStore(BlobPayloadStoreOptions(
        connection_string=storage.connection_string, account_url=storage.account_url,
        credential=credential if storage.account_url else None, container_name=storage.container,
        threshold_bytes=storage.threshold_bytes,
    ))


def servicebus_client(
    settings: ServiceBusSettings, *, credential: AsyncTokenCredential | None = None, **options: Any
) -> ServiceBusClient:
    """An asyncio Service Bus client: SAS from the connection string, or Entra ID against the namespace; `options`
    are the SDK's own client options (the listener's session mode sets retry_total)."""
    from azure.servicebus.aio import ServiceBusClient

    client: ServiceBusClient = _servicebus(ServiceBusClient, settings, credential, credentials.async_entra, **options)
    return client


def servicebus_sync_client(
    settings: ServiceBusSettings, *, credential: TokenCredential | None = None
) -> SyncServiceBusClient:
    """A blocking Service Bus client, for the publishing CLI."""
    from azure.servicebus import ServiceBusClient as SyncServiceBusClient

    client: SyncServiceBusClient = _servicebus(SyncServiceBusClient, settings, credential, credentials.sync_entra)
    return client


def _servicebus(kind: Any, settings: ServiceBusSettings, credential: Any, entra: Any, **options: Any) -> Any:
    """Both clients are made the same way (and see the SDK patches, installed on first use)."""
    patches.install(patches.SERVICEBUS)
    options.setdefault("ssl_context", tls_context())
    access = settings.access
    if isinstance(access, ConnectionString):
        return kind.from_connection_string(access.connection_string, **options)
    return kind(access.namespace, credential or entra(access.auth, access.client_id), use_tls=access.use_tls,
                **options)

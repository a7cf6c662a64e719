"""`sbworker run` as a whole: SIGTERM with messages in flight, health endpoints, Entra ID credentials, secrets."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from listener import service
from localbus import LocalBus
from sbworker import patches
from sbworker.core import config, credentials
from sbworker.core.config import Auth
from tests.fixtures.dts import DtsBackend
from tests.integration.harness import QUEUE
from tests.support.ports import free_port
from tests.support.processes import Process, sbworker_env
from tests.support.wait import eventually, until

SECRET_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3ODk="


@pytest.fixture
def bus() -> Iterator[LocalBus]:
    # accept_jwt: the managed-identity test presents Entra ID (jwt) tokens, which localbus refuses by default.
    with LocalBus(port=0, queues={QUEUE: {"LockDuration": "PT60S", "MaxDeliveryCount": 10}},
                  key=SECRET_KEY, accept_jwt=True) as b:
        yield b


def publish(bus: LocalBus, bodies: list[tuple[str | None, bytes]]) -> list[str]:
    ids = []
    with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_queue_sender(QUEUE) as sender:
        batch = sender.create_message_batch()
        for subject, body in bodies:
            mid = uuid.uuid4().hex
            ids.append(mid)
            message = ServiceBusMessage(body, subject=subject, message_id=mid, content_type="application/json")
            try:
                batch.add_message(message)
            except ValueError:
                sender.send_messages(batch)
                batch = sender.create_message_batch()
                batch.add_message(message)
        sender.send_messages(batch)
    return ids


START = json.dumps({"orchestration": "hello_cities"}).encode()


def test_sigterm_settles_everything_in_flight_exactly_once(bus: LocalBus, dts_backend: DtsBackend,
                                                          dts_client: DurableTaskSchedulerClient) -> None:
    env = sbworker_env(bus.connection_string, dts_backend.connection_string, MAX_CONCURRENT_MESSAGES="4",
                    PREFETCH_COUNT="20", SHUTDOWN_GRACE_SECONDS="20")
    with Process(["run"], env).start() as svc:
        svc.wait_for_output("listening on queue")
        ids = publish(bus, [("start", START)] * 300)
        until(lambda: dts_client.get_orchestration_state(ids[10]) is not None, what="the 11th start's instance",
              timeout=30, interval=0.02)  # in flight: SIGTERM now
        assert svc.terminate(signal.SIGTERM, timeout=60) == 0, svc.output[-3000:]
        assert "SIGTERM received" in svc.output
        assert "Traceback" not in svc.output

    started = {i for i in ids if dts_client.get_orchestration_state(i) is not None}
    assert started, "the listener processed nothing before SIGTERM"
    # Nothing is left locked: everything not started is receivable at once (the lock is 60 s long).
    with ServiceBusClient.from_connection_string(bus.connection_string) as client, \
            client.get_queue_receiver(QUEUE, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
        remaining: list[str] = []
        while batch := r.receive_messages(max_message_count=100, max_wait_time=2):
            remaining.extend(str(m.message_id) for m in batch)
    assert len(remaining) == len(set(remaining))
    # Each message either started its instance (and was completed) or went back untouched: never both, never lost.
    assert started.isdisjoint(remaining)
    assert started | set(remaining) == set(ids)


def test_health_endpoints(bus: LocalBus, dts_backend: DtsBackend) -> None:
    port = free_port()
    env = sbworker_env(bus.connection_string, dts_backend.connection_string, HEALTH_PORT=str(port))
    with Process(["run", "--no-worker"], env).start() as svc:
        svc.wait_for_output("listening on queue")
        assert _get(port, "/healthz") == (200, {"status": "alive"})
        status, body = _get(port, "/readyz")
        # /readyz also names the SDK patches in force (sbworker/patches/): all of them, on a verified SDK; and the
        # event loop, uvloop by default (a dependency wherever it builds).
        assert (status, body) == (200, {"status": "ready", "dts": True, "servicebus": True,
                                        "sdk_patches": patches.expected(), "event_loop": "uvloop"})
        assert "event loop: uvloop" in svc.output
        assert _get(port, "/nope")[0] == 404
        assert svc.terminate() == 0


def test_health_port_refuses_huge_headers_and_a_probe_flood_does_not_stop_messages(
        bus: LocalBus, dts_backend: DtsBackend, dts_client: DurableTaskSchedulerClient) -> None:
    """A 64 KiB+ header used to log a traceback each time, and probes ran on the listener's own event loop."""
    port = free_port()
    env = sbworker_env(bus.connection_string, dts_backend.connection_string, HEALTH_PORT=str(port))
    with Process(["run", "--no-worker"], env).start() as svc:
        svc.wait_for_output("listening on queue")
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
                assert raw.recv(64).split(b" ")[1] in (b"400", b"431")
        # 100 small headers: within aiohttp's default of 128, over our 64 (so our limits are the ones in force).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            many = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
            assert raw.recv(64).split(b" ")[1] in (b"400", b"431")
        ids = publish(bus, [("start", START)] * 40)
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda _: _get(port, "/readyz")[0], range(400)))
        assert set(codes) == {200}
        until(lambda: all(dts_client.get_orchestration_state(i) is not None for i in ids),
              what="an instance for each of the 40 starts", timeout=30, interval=0.1)
        assert svc.terminate() == 0
        assert "Traceback" not in svc.output


def test_readyz_reports_dts_unreachable(bus: LocalBus) -> None:
    port = free_port()
    dead_dts = f"Endpoint=http://localhost:{free_port()};Authentication=None"
    env = sbworker_env(bus.connection_string, dead_dts, HEALTH_PORT=str(port))
    with Process(["run", "--no-worker"], env).start() as svc:
        svc.wait_for_output("listening on queue")
        status, body = _get(port, "/readyz")
        assert status == 503 and body["dts"] is False and body["servicebus"] is True
        assert _get(port, "/healthz")[0] == 200
        assert svc.terminate() == 0


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class FakeAsyncCredential:
    """Stands in for ManagedIdentityCredential: same interface, a fixed token, and a record of what was asked."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeAsyncCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


async def test_managed_identity_configuration_presents_tokens(bus: LocalBus, dts_backend: DtsBackend,
                                                              dts_client: DurableTaskSchedulerClient) -> None:
    settings = config.load({
        "SERVICEBUS_NAMESPACE": f"localhost:{bus.port}",
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-00000000c11d",
        "DTS_CONNECTION_STRING": f"Endpoint=http://localhost:{dts_backend.port};Authentication=ManagedIdentity",
        "HEALTH_PORT": "0",
    })
    assert isinstance(settings.servicebus.access, config.EntraId)
    assert settings.servicebus.access.auth is Auth.MANAGED_IDENTITY and settings.dts.auth is Auth.MANAGED_IDENTITY
    sb_credential = FakeAsyncCredential("eyJ0eXAiOiJKV1QifQ.sb-token-for-tests.sig")
    dts_credential = FakeAsyncCredential("eyJ0eXAiOiJKV1QifQ.dts-token-for-tests.sig")
    running = service.Service(settings, with_worker=False, servicebus_credential=sb_credential,
                              dts_async_credential=dts_credential)
    await running.start()
    try:
        # Once connected, the receiver's token is the last one the queue saw (the publish below presents a SAS).
        await running.ready(30)
        token_type, token = bus.last_token(QUEUE) or ("", "")
        assert token_type == "jwt" and token == sb_credential.token
        [mid] = await asyncio.to_thread(publish, bus, [("start", START)])

        async def started() -> bool:
            return await asyncio.to_thread(dts_client.get_orchestration_state, mid) is not None

        await eventually(started, timeout=30, what="instance started through Entra ID clients")
        # (the SDK itself asks for "https://servicebus.azure.net//.default", double slash included)
        assert any(s[0].startswith("https://servicebus.azure.net/") for s in sb_credential.scopes)
        assert ("https://durabletask.io/.default",) in dts_credential.scopes
    finally:
        await asyncio.wait_for(running.stop(), 60)


def test_managed_identity_credential_uses_the_client_id() -> None:
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    cred = credentials.async_credential(Auth.MANAGED_IDENTITY, "cid-1")
    assert isinstance(cred, ManagedIdentityCredential)
    assert isinstance(credentials.async_credential(Auth.DEFAULT_AZURE, None), DefaultAzureCredential)
    assert credentials.async_credential(Auth.NONE, None) is None
    assert credentials.sync_credential(Auth.NONE, None) is None


def test_logs_never_contain_the_key_or_a_token(bus: LocalBus, dts_backend: DtsBackend, tmp_path: Path) -> None:
    env = sbworker_env(bus.connection_string, dts_backend.connection_string, LOG_LEVEL="DEBUG")
    with Process(["run"], env).start() as svc:
        svc.wait_for_output("listening on queue")
        ids = publish(bus, [("start", START), ("start", b"{broken"), ("approval", b'{"instance_id": 1}')])
        for mid in ids:
            svc.wait_for_output(f"message_id={mid}")
        assert svc.terminate() == 0
        output = svc.output
    assert "settled message_id=" in output
    assert SECRET_KEY not in output
    assert "sig=" not in output.replace("sig=***", "")
    assert "SharedAccessSignature sr" not in output


def test_no_listener_runs_only_the_worker(bus: LocalBus) -> None:
    from tests.fixtures.dts import start_backend

    backend = start_backend()  # no other worker attached: only the subprocess can run this orchestration
    port = free_port()
    try:
        # asyncio's own loop, as EVENT_LOOP=asyncio asks (every other `sbworker run` here runs on uvloop)
        env = sbworker_env(bus.connection_string, backend.connection_string, HEALTH_PORT=str(port),
                           EVENT_LOOP="asyncio")
        with Process(["run", "--no-listener"], env).start() as svc:
            svc.wait_for_output("DTS worker started")
            with DurableTaskSchedulerClient(host_address=f"localhost:{backend.port}", taskhub="default",
                                            token_credential=None, secure_channel=False) as client:
                iid = client.schedule_new_orchestration("hello_cities")
                until(lambda: (state := client.get_orchestration_state(iid)) is not None and state.serialized_output,
                      what="the worker running the orchestration", timeout=30)
            status, body = _get(port, "/readyz")
            # no receiver to report on; the worker makes progress
            assert (status, body) == (200, {"status": "ready", "dts": True, "worker": True,
                                            "sdk_patches": patches.expected(), "event_loop": "asyncio"})
            assert "listening on queue" not in svc.output
            assert svc.terminate() == 0
    finally:
        backend.stop()


async def test_a_service_run_puts_back_the_signal_handlers_and_gc_settings_it_found(dts_backend: DtsBackend) -> None:
    """Embedded in a bigger program (or a test), the service must not leave its own SIGINT/SIGTERM handling behind:
    asyncio alone resets a removed SIGINT handler to Python's default, not to what the program had."""
    settings = config.load({"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://localhost;SharedAccessKeyName=k;"
                                                            "SharedAccessKey=unused;UseDevelopmentEmulator=true;",
                            "DTS_CONNECTION_STRING": dts_backend.connection_string, "HEALTH_PORT": "0"})
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    threshold = gc.get_threshold()
    try:
        stop = asyncio.Event()
        stop.set()
        assert await service.serve(settings, with_worker=False, with_listener=False, stop=stop) == 0
        assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, 0)  # nor its collector settings
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)

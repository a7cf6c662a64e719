"""A DTS channel that goes silent is replaced: grpc.aio would otherwise keep a half-open link for about a minute."""

from __future__ import annotations

import uuid

import pytest

from listener import dispatch
from listener.dispatch import Dispatcher, Started
from sbworker.core import clients
from sbworker.core.config import parse_dts
from sbworker.core.contract import StartRequest
from tests.fixtures.dts import DtsBackend
from tests.reliability.faultproxy import FaultProxy


@pytest.mark.parametrize("minimal_stack", [True, False], ids=["listener's channel", "default channel"])
async def test_a_silent_dts_client_is_replaced_and_the_start_goes_through(
        dts_backend: DtsBackend, monkeypatch: pytest.MonkeyPatch, minimal_stack: bool) -> None:
    monkeypatch.setattr(dispatch, "RECONNECT_AFTER_TIMEOUT_SECONDS", 0.0)
    proxy = FaultProxy(dts_backend.port).start()
    try:
        via_proxy = parse_dts(f"Endpoint=http://localhost:{proxy.port};Authentication=None")
        made: list[object] = []

        def fresh() -> object:
            # a new channel: a new connection through the proxy (the listener's has gRPC's minimal stack)
            client = clients.dts_async_client(via_proxy, minimal_stack=minimal_stack)
            made.append(client)
            return client

        dispatcher = Dispatcher(fresh(), call_timeout=0.5, retry_seconds=10.0, reconnect=fresh)  # type: ignore[arg-type]
        await dispatcher.client.get_orchestration_state("warm-up")  # the connection is open ...
        proxy.stall()  # ... and now half-open: bytes dropped, no FIN
        iid = f"reconnect-{uuid.uuid4().hex}"
        outcome = await dispatcher.dispatch(StartRequest(orchestration="hello_cities", instance_id=iid, input=None,
                                                         start_at=None, instance_id_from_message=False))
        assert outcome == Started(iid)
        assert len(made) == 2 and dispatcher.client is made[-1]
        await dispatcher.close()
    finally:
        proxy.stop()

"""Short calls run on the small call pool; streams and waits stay on the big pool (localdts.pools)."""

from __future__ import annotations

import threading
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc

from localdts.backend import DurableBackend
from localdts.pools import SHORT_CALLS
from tests.localdts import support


class Recording(DurableBackend):
    """Notes which thread ran each call."""

    def __init__(self) -> None:
        super().__init__(port=0)
        self.threads: dict[str, str] = {}

    def StartInstance(self, request: pb.CreateInstanceRequest, context: grpc.ServicerContext) -> Any:
        self.threads["StartInstance"] = threading.current_thread().name
        return super().StartInstance(request, context)

    def WaitForInstanceStart(self, request: pb.GetInstanceRequest, context: grpc.ServicerContext) -> Any:
        self.threads["WaitForInstanceStart"] = threading.current_thread().name
        return super().WaitForInstanceStart(request, context)


def test_short_calls_on_the_call_pool_waits_on_the_big_one() -> None:
    backend = Recording()
    backend.start()
    client = support.new_client(backend.port)
    try:
        iid = client.schedule_new_orchestration("hello_cities")
        client.wait_for_orchestration_start(iid, timeout=1)  # no worker: returns (None) after the timeout
    except TimeoutError:
        pass
    finally:
        client.close()
        backend.stop(grace=0)
    assert backend.threads["StartInstance"].startswith("localdts-call")
    assert backend.threads["WaitForInstanceStart"].startswith("localdts-grpc")


def test_every_short_call_is_a_unary_method_of_the_service() -> None:
    names = {m.name: m for m in pb.DESCRIPTOR.services_by_name["TaskHubSidecarService"].methods}
    assert set(names) >= SHORT_CALLS
    assert not any(names[n].server_streaming or names[n].client_streaming for n in SHORT_CALLS)
    assert not SHORT_CALLS & {"GetWorkItems", "WaitForInstanceStart", "WaitForInstanceCompletion"}

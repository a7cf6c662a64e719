"""A client that pings to find half-open links is never sent away for it.

Our clients ping every 10 s, with or without calls (sbworker.core.clients), as DTS permits. gRPC's default server
policy does not: after two pings it finds too frequent it closes the connection with GOAWAY `too_many_pings`,
ending every stream on it. The SDK's in-memory test backend keeps that default, and a worker stream it closed
stalled tests under load; localdts must not. Pings every 0.5 s here, so that a few arrive within seconds.
"""

from __future__ import annotations

import grpc
import pytest
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs

from localdts import LocalDts

PINGS = [("grpc.keepalive_time_ms", 500), ("grpc.keepalive_timeout_ms", 5_000),
         ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
         ("grpc.http2.min_time_between_pings_ms", 500)]


def test_a_stream_without_traffic_outlives_many_pings() -> None:
    with LocalDts(port=0) as dts, grpc.insecure_channel(f"localhost:{dts.port}", options=PINGS) as channel:
        stream = stubs.TaskHubSidecarServiceStub(channel).GetWorkItems(pb.GetWorkItemsRequest(), timeout=4)
        with pytest.raises(grpc.RpcError) as ended:
            next(iter(stream))  # no work: the stream stays silent until its deadline
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ended.value.details()

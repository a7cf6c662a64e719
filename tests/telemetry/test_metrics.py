"""`/metrics` on the health port: Prometheus text whose counters match what the listener settled.

The service runs in the test's loop (listener + worker) with the real telemetry setup and no exporter configured:
metrics on, traces off. What was settled is read back from the queue and DTS, then compared with the counters.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
from prometheus_client.parser import text_string_to_metric_families

from localbus import LocalBus
from localdts import LocalDts
from sbworker.observability import config as observability_config
from sbworker.observability import telemetry
from sbworker.observability.metrics import NOOP, OtelMetrics
from sbworker.observability.observer import NO_TRACE
from tests.support.ports import free_port
from tests.support.wait import eventually
from tests.telemetry import support
from tests.telemetry.otlp_receiver import OtlpReceiver

QUEUE = "workflow-requests"


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_what_was_settled(localbus: LocalBus, dts: LocalDts) -> None:
    port = free_port()
    settings = support.settings(localbus, dts, health_port=port, health_host="127.0.0.1",
                                approval_not_found_window_seconds=0.0)
    duplicate_id = uuid.uuid4().hex
    bodies: list[tuple[str, dict[str, object]]] = [
        *[("start", {"orchestration": "hello_cities"})] * 3,
        ("start", {"orchestration": "hello_cities", "instance_id": duplicate_id}),
        ("start", {"orchestration": "not_registered"}),
        ("nonsense", {}),
        ("approval", {"instance_id": f"missing-{uuid.uuid4().hex}", "approved": True, "approver": "ada"}),
    ]
    async with support.running(settings, telemetry.setup(observability_config.load({}))):
        async with ServiceBusClient.from_connection_string(localbus.connection_string) as client, \
                client.get_queue_sender(QUEUE) as sender:
            for subject, body in bodies:
                await sender.send_messages(ServiceBusMessage(json.dumps(body), subject=subject,
                                                             content_type="application/json"))
            # The second start of the same instance arrives after the first one's is settled: a duplicate.
            await eventually(lambda: _settled(port) >= len(bodies), what="every message settled")
            await sender.send_messages(ServiceBusMessage(json.dumps(bodies[3][1]), subject="start",
                                                         content_type="application/json"))
            await eventually(lambda: _settled(port) >= len(bodies) + 1, what="the duplicate settled")
        await asyncio.sleep(0.2)  # a late, wrong settlement would show up here
        status, content_type, text = get(port, "/metrics")

    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    found = samples(text)
    settled = {labels: value for (name, labels), value in found.items() if name == "sbworker_messages_settled_total"}
    assert settled == {
        (("action", "complete"), ("reason", "started")): 4,
        (("action", "complete"), ("reason", "duplicate")): 1,
        (("action", "dead_letter"), ("reason", "UnknownOrchestration")): 1,
        (("action", "dead_letter"), ("reason", "UnknownSubject")): 1,
        (("action", "dead_letter"), ("reason", "InstanceNotFound")): 1,
    }, text
    assert found[("sbworker_message_handling_duration_seconds_count", (("action", "complete"),))] == 5
    assert found[("sbworker_message_handling_duration_seconds_count", (("action", "dead_letter"),))] == 3
    assert found[("sbworker_dts_call_duration_seconds_count", (("operation", "start"), ("outcome", "ok")))] == 4
    assert found[("sbworker_dts_call_duration_seconds_count",
                  (("operation", "start"), ("outcome", "ALREADY_EXISTS")))] == 1
    assert found[("sbworker_messages_in_flight", ())] == 0
    # A histogram's buckets are cumulative and end with +Inf == count.
    assert found[("sbworker_message_handling_duration_seconds_bucket", (("action", "complete"), ("le", "+Inf")))] == 5


def _settled(port: int) -> float:
    status, _, text = get(port, "/metrics")
    assert status == 200
    return sum(v for (name, _), v in samples(text).items() if name == "sbworker_messages_settled_total")


async def test_with_the_sdk_disabled_there_is_no_metrics_endpoint(localbus: LocalBus, dts: LocalDts) -> None:
    port = free_port()
    settings = support.settings(localbus, dts, health_port=port, health_host="127.0.0.1")
    disabled = observability_config.load({"OTEL_SDK_DISABLED": "true"})
    async with support.running(settings, telemetry.setup(disabled)) as listener:
        assert listener.observer.message(None) is NO_TRACE  # type: ignore[arg-type]  # no span: never built
        status, _, _ = get(port, "/metrics")
        assert get(port, "/healthz")[0] == 200
    assert status == 404


def test_without_a_reader_of_metrics_nothing_is_recorded_and_a_push_exporter_alone_still_gets_them() -> None:
    """`sbworker run` with HEALTH_PORT=0 serves no /metrics (scrape=False): without a push exporter the listener
    holds the no-op Metrics; with one, it records for that exporter alone."""
    silent = telemetry.setup(observability_config.load({}), scrape=False)
    assert silent.metrics is NOOP and silent.prometheus is None
    with OtlpReceiver() as otlp:
        pushed = telemetry.setup(observability_config.load({
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{otlp.endpoint}/v1/metrics"}), scrape=False)
        try:
            assert isinstance(pushed.metrics, OtelMetrics) and pushed.prometheus is None
            pushed.observer("q").settled(NO_TRACE, "complete", "started", 0.01)
        finally:
            pushed.shutdown()  # the final push
        assert {"sbworker.messages.settled", "sbworker.message.handling.duration"} <= otlp.metric_names

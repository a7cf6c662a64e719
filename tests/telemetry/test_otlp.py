"""`sbworker publish` and `sbworker run` as real processes, configured only by OTEL_* variables, exporting over
OTLP/HTTP to a receiver the test runs: one trace from the publisher's PRODUCER span to the worker's activities.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from localbus import LocalBus
from localdts import LocalDts
from tests.support.ports import free_port
from tests.support.processes import Process, sbworker, sbworker_env
from tests.support.wait import until
from tests.telemetry.otlp_receiver import OtlpReceiver, Span

QUEUE = "workflow-requests"
PRODUCER, CONSUMER = 4, 5  # OTLP Span.SpanKind


def named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def test_publish_and_service_export_one_trace_over_otlp_http(localbus: LocalBus, dts: LocalDts) -> None:
    health_port = free_port()
    with OtlpReceiver() as otlp:
        env = sbworker_env(localbus.connection_string, dts.connection_string,
                        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_SERVICE_NAME="sbworker-under-test",
                        OTEL_TRACES_SAMPLER="always_on", OTEL_BSP_SCHEDULE_DELAY="100",
                        OTEL_METRIC_EXPORT_INTERVAL="500", HEALTH_PORT=str(health_port))
        with Process(["run"], env).start() as run:
            run.wait_for_output("listening on queue")
            published = sbworker("publish", "start", "hello_cities", env=env)
            assert published.returncode == 0, published.stderr
            fields = dict(line.split(":", 1) for line in published.stdout.splitlines())
            trace_id, instance_id = fields["trace_id"].strip(), fields["instance_id"].strip()
            until(lambda: len(named(otlp.in_trace(trace_id), "activity:say_hello")) == 6
                  and bool(named(otlp.in_trace(trace_id), "orchestration:hello_cities")),
                  what="the worker's spans in the publisher's trace")
            settled = 'sbworker_messages_settled_total{action="complete",reason="started"} 1.0'

            def scrape() -> tuple[str, str] | None:
                # The message is counted once the broker confirmed its completion, which is not ordered with the
                # worker's spans: scrape until it is (and the handler has ended).
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as reply:
                    body = reply.read().decode()
                    if settled in body and "sbworker_messages_in_flight 0.0" in body:
                        return reply.headers["Content-Type"], body
                return None

            content_type, text = until(scrape, what="the settled message in /metrics")
            until(lambda: "sbworker.messages.settled" in otlp.metric_names, what="metrics over OTLP")
            assert run.terminate() == 0, run.output[-3000:]

    spans = otlp.in_trace(trace_id)
    (send,) = named(spans, f"send {QUEUE}")
    (process,) = named(spans, f"process {QUEUE}")
    (create,) = named(spans, "create_orchestration:hello_cities")
    (orchestration,) = named(spans, "orchestration:hello_cities")
    assert send.kind == PRODUCER and send.parent_id is None
    assert process.kind == CONSUMER and process.parent_id == send.span_id
    assert process.attributes["sbworker.instance_id"] == instance_id
    assert create.parent_id == process.span_id and orchestration.parent_id == create.span_id
    assert {s.resource["service.name"] for s in spans} == {"sbworker-under-test"}

    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("sbworker_messages_settled_total", (("action", "complete"), ("reason", "started")))] == 1
    assert samples[("sbworker_message_handling_duration_seconds_count", (("action", "complete"),))] == 1
    assert samples[("sbworker_dts_call_duration_seconds_count", (("operation", "start"), ("outcome", "ok")))] == 1
    assert samples[("sbworker_messages_in_flight", ())] == 0

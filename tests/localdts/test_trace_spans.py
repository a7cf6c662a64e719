"""Item 3 end to end: with OpenTelemetry installed, the SDK's client, orchestration and activity spans form one
trace through localdts. Skipped where opentelemetry-sdk is not installed (it is an optional SDK dependency);
``test_trace_context.py`` checks the same fields over the wire without it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from localdts import LocalDts
from tests.fixtures.isolation import session_tracer_provider
from tests.localdts import support
from tests.support.wait import until


def test_sdk_spans_of_caller_orchestration_and_activities_share_one_trace(
        dts: LocalDts, client: DurableTaskSchedulerClient, worker: DurableTaskSchedulerWorker,
        span_exporter: InMemorySpanExporter) -> None:
    exporter = span_exporter  # attached to the session's global provider, which the SDK builds its spans from
    tracer = session_tracer_provider().get_tracer("localdts-test")

    with tracer.start_as_current_span("caller") as caller:
        iid = client.schedule_new_orchestration("hello_cities")
    trace_id = caller.get_span_context().trace_id
    support.wait_status(client, iid, OrchestrationStatus.COMPLETED)
    until(lambda: sum("say_hello" in s.name for s in exporter.get_finished_spans()) >= 3
          and any("hello_cities" in s.name and s.kind == trace.SpanKind.SERVER for s in exporter.get_finished_spans()),
          what="the worker's spans", timeout=10)

    spans = [s for s in exporter.get_finished_spans() if s.name != "caller"]
    names = sorted({s.name for s in spans})
    assert any("hello_cities" in n for n in names) and any("say_hello" in n for n in names), names
    assert {s.context.trace_id for s in spans} == {trace_id}, [(s.name, hex(s.context.trace_id)) for s in spans]

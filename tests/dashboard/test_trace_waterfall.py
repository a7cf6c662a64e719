"""The dashboard's own waterfall, from spans a real OpenTelemetry tracer provider handed to RecentSpans."""

from __future__ import annotations

import re

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from sbworker.dashboard import serve, timeline
from sbworker.observability.recent_spans import RecentSpans
from tests.dashboard.conftest import Stack, Web


def traced() -> tuple[RecentSpans, str]:
    store = RecentSpans(max_traces=2)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(store))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("process workflow-requests", kind=SpanKind.CONSUMER,
                                      attributes={"messaging.message.id": "m-1", "ignored": "x"}) as root, \
            tracer.start_as_current_span("create_orchestration:hello_cities", kind=SpanKind.PRODUCER), \
            tracer.start_as_current_span("orchestration:hello_cities", kind=SpanKind.SERVER), \
            tracer.start_as_current_span("activity:say_hello", kind=SpanKind.CLIENT) as failed:
        failed.set_status(Status(StatusCode.ERROR))
    return store, format(root.get_span_context().trace_id, "032x")


def test_a_trace_becomes_bars_parents_first_indented_by_depth() -> None:
    store, trace_id = traced()
    chart = timeline.from_spans(store.trace(trace_id))
    assert [b.label for b in chart.bars] == ["process workflow-requests", "· create_orchestration:hello_cities",
                                             "· · orchestration:hello_cities", "· · · activity:say_hello"]
    assert [b.kind for b in chart.bars] == ["wait", "suborchestration", "orchestration", "activity"]
    assert chart.bars[-1].outcome == timeline.FAILED and chart.bars[0].outcome == timeline.COMPLETED
    assert chart.bars[0].detail == "messaging.message.id=m-1"  # only the attributes worth a tooltip are kept


def test_only_the_newest_traces_are_kept() -> None:
    crowded = RecentSpans(max_traces=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(crowded))
    tracer = provider.get_tracer("test")
    ids = []
    for name in ("one", "two"):
        with tracer.start_as_current_span(name) as span:
            ids.append(format(span.get_span_context().trace_id, "032x"))
    assert crowded.trace(ids[0]) == [] and [s.name for s in crowded.trace(ids[1])] == ["two"]


def test_a_trace_from_before_a_restart_says_why_it_is_gone(stack: Stack) -> None:
    """The spans live in the process's memory: after a restart the old trace links must explain, not lead nowhere."""
    board = serve(stack.settings, port=0, spans=RecentSpans())  # a process that has seen no span yet
    try:
        page = Web(f"http://127.0.0.1:{board.port}").get("/trace?id=" + "ab" * 16)
    finally:
        board.stop()
    assert page.status == 404
    assert re.search(r"since it started at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(the newest 500 traces\), so a "
                     r"trace from before a restart is gone", page.text)

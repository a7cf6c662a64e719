"""The process's own recent spans, kept in memory: `sbworker dev`'s dashboard draws a trace with no viewer at all.

A bounded exporter: the newest `max_traces` traces, at most `max_spans` spans each; older ones are forgotten.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from sbworker.core.text import clip

# Attributes worth a tooltip; everything else stays out of memory.
KEPT_ATTRIBUTES = ("messaging.message.id", "messaging.servicebus.disposition_status", "sbworker.settlement.reason",
                   "sbworker.instance_id", "sbworker.orchestration", "durabletask.task.instance_id",
                   "durabletask.task.name", "durabletask.task.task_id")


@dataclass(frozen=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str  # server, client, producer, consumer, internal
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, str] = field(default_factory=dict)


class RecentSpans(SpanExporter):
    def __init__(self, max_traces: int = 500, max_spans: int = 1000) -> None:
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._traces: OrderedDict[str, list[SpanRecord]] = OrderedDict()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                record = _record(span)
                if record is None:
                    continue
                kept = self._traces.setdefault(record.trace_id, [])
                self._traces.move_to_end(record.trace_id)
                if len(kept) < self._max_spans:
                    kept.append(record)
            while len(self._traces) > self._max_traces:
                self._traces.popitem(last=False)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """The spans of one trace seen so far (32 lowercase hex digits), oldest first."""
        with self._lock:
            return sorted(self._traces.get(trace_id.lower(), []), key=lambda s: s.start_ns)


def _record(span: ReadableSpan) -> SpanRecord | None:
    context = span.context
    if context is None or span.start_time is None:
        return None
    attributes = {k: clip(v, 200) for k, v in (span.attributes or {}).items() if k in KEPT_ATTRIBUTES}
    return SpanRecord(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_id=format(span.parent.span_id, "016x") if span.parent is not None else None,
        name=span.name,
        kind=span.kind.name.lower(),
        start_ns=span.start_time,
        end_ns=span.end_time or span.start_time,
        error=span.status.status_code is StatusCode.ERROR,
        attributes=attributes,
    )

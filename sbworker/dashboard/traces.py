"""The hook that links an instance to its trace, for when the service exports telemetry.

What the dashboard knows for sure is the W3C `traceparent` that DTS keeps on the ExecutionStarted event (the
listener's start call carries it when tracing is on; localdts keeps it too). Where that trace can be *seen*
depends on the deployment: Jaeger or another OTLP viewer, or Application Insights' transaction search. Nothing
in this repository decides that yet, so the default hook returns no link and the instance page says that
tracing is not configured; it never invents a link.

To link traces, pass `trace_link=` to `sbworker.dashboard.app.create_app` (or `sbworker.dashboard.serve`): a
function that gets the instance id and the trace id (32 hex digits, or None when the start carried no trace
context) and returns a URL, or None. For example, for a Jaeger UI on localhost:16686::

    def jaeger(instance_id: str, trace_id: str | None) -> str | None:
        return f"http://localhost:16686/trace/{trace_id}" if trace_id else None
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sbworker.observability.recent_spans import SpanRecord

TraceLink = Callable[[str, str | None], str | None]


class SpanSource(Protocol):
    """Where this process keeps its own recent spans (`sbworker dev`: `sbworker.observability.recent_spans`)."""

    def trace(self, trace_id: str) -> list[SpanRecord]: ...


def local_traces(_instance_id: str, trace_id: str | None) -> str | None:
    """The dashboard's own waterfall (`/trace`), for a process that keeps its spans in memory."""
    return f"/trace?id={trace_id}" if trace_id else None


def no_traces(_instance_id: str, _trace_id: str | None) -> str | None:
    """The default: no trace viewer is configured, so there is nothing to link to."""
    return None


def trace_id(trace_parent: str | None) -> str | None:
    """`00-<trace id>-<span id>-<flags>` → the trace id; None for anything else (or the all-zero id)."""
    if not trace_parent:
        return None
    parts = trace_parent.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return None
    value = parts[1].lower()
    if not all(c in "0123456789abcdef" for c in value) or value == "0" * 32:
        return None
    return value

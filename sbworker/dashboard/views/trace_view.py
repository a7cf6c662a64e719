"""`/trace?id=…`: the waterfall of one trace from the spans this process kept in memory (`sbworker dev`)."""

from __future__ import annotations

from aiohttp import web

from sbworker.core.times import utc_text
from sbworker.dashboard import timeline
from sbworker.dashboard.views import backend, render


async def waterfall(request: web.Request) -> web.Response:
    trace_id = request.query.get("id", "").strip().lower()
    spans = backend(request).spans
    if spans is None:
        return render(request, "trace.html", status=404, trace_id=trace_id, chart=None, ticks=[],
                      error="This dashboard keeps no spans: only `sbworker dev` does. Use your trace viewer.")
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        return render(request, "trace.html", status=400, trace_id=trace_id[:64], chart=None, ticks=[],
                      error="A trace id is 32 hexadecimal digits.")
    chart = timeline.from_spans(spans.trace(trace_id))
    if not chart.bars:
        since = utc_text(backend(request).started)
        return render(request, "trace.html", status=404, trace_id=trace_id, chart=None, ticks=[],
                      error=f"No span of this trace is in memory: this process keeps the spans it saw since it "
                            f"started at {since} (the newest 500 traces), so a trace from before a restart is gone.")
    return render(request, "trace.html", trace_id=trace_id, chart=chart, ticks=timeline.ticks(chart), error=None)

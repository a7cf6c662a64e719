"""`/overview`: instances per status and name, starts and completions per minute, the queue over time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web

from sbworker.core.errors import one_line
from sbworker.dashboard import overview
from sbworker.dashboard.views import backend, dts, hub, render

log = logging.getLogger(__name__)

WINDOWS = {"all": None, "24h": timedelta(hours=24), "1h": timedelta(hours=1)}
FIRST_SAMPLE_WAIT = 1.0  # seconds the first visit waits for the sampler's first look


async def overview_page(request: web.Request) -> web.Response:
    board = backend(request)
    window = request.query.get("window", "all")
    if window not in WINDOWS:
        raise web.HTTPBadRequest(text=f"window: one of {', '.join(WINDOWS)}")
    span = WINDOWS[window]
    board.sampler(hub(request)).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(board.sampler(hub(request)).first_sample.wait(), FIRST_SAMPLE_WAIT)
    now = datetime.now(UTC)
    counts, error = None, None
    try:
        counts = await overview.counts(dts(request), now - span if span else None)
    except Exception as problem:
        log.warning("counting instances failed: %s", one_line(problem, 500))
        error = f"DTS did not answer: {one_line(problem, 500)}"
    minutes = board.sampler(hub(request)).history.window(now)
    return render(request, "overview.html", status=502 if error else 200, counts=counts, error=error,
                  window=window, windows=list(WINDOWS), count_page=overview.COUNT_PAGE,
                  statuses=[s.name for s in overview.STATUSES],
                  throughput=overview.chart(minutes, ("starts", "completions")),
                  depth=overview.chart(minutes, ("active", "dead_letter")),
                  capped_minutes=any(m.starts_capped or m.completions_capped for _, m in minutes),
                  sampler_errors=board.sampler(hub(request)).errors, sample_seconds=overview.SAMPLE_SECONDS,
                  chart_height=overview.HEIGHT, chart_width=overview.WIDTH, chart_left=overview.LEFT,
                  chart_bottom=overview.BOTTOM)

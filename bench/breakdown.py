"""Where a message's time goes between receipt and settlement (bench.msgtrace's timestamps, summarised).

Each segment is the median (and p90) over the messages of one run, in milliseconds. A segment's median is not
additive with the others' medians, so the table also gives the median of the whole receipt → settled span.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import latency, listener_throughput
from bench.stack import Backend, Broker

# (label, from step, to step) — steps as bench.msgtrace.STEPS names them.
SEGMENTS = (
    ("in the SDK's prefetch buffer", "arrived", "received"),
    ("task start (received → handler runs)", "received", "handle"),
    ("parse + validate", "parse_start", "parse_end"),
    ("DTS call (schedule_new_orchestration)", "dts_start", "dts_end"),
    ("settle: disposition written", "settle_start", "disposition_sent"),
    ("settle: broker's outcome read back", "disposition_sent", "settle_end"),
    ("receipt → settled (total)", "received", "settle_end"),
)


@dataclass(frozen=True)
class Segment:
    label: str
    p50_ms: float
    p90_ms: float


@dataclass(frozen=True)
class Breakdown:
    mode: str  # "backlog" (drain a pre-loaded queue) or "paced" (a steady rate)
    max_concurrent: int
    prefetch: int
    n: int  # messages traced
    per_second: float  # the run's throughput (backlog) or publish rate (paced)
    segments: list[Segment]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(steps: list[str], records: list[list[float | None]]) -> list[Segment]:
    """Median and p90 of each segment over the records that have both of its ends."""
    index = {s: i for i, s in enumerate(steps)}
    out = []
    for label, a, b in SEGMENTS:
        spans = [(r[index[b]] - r[index[a]]) * 1000 for r in records  # type: ignore[operator]
                 if r[index[a]] is not None and r[index[b]] is not None]
        out.append(Segment(label, _quantile(spans, 0.5), _quantile(spans, 0.9)))
    return out


def _load(path: Path) -> tuple[list[str], list[list[float | None]]]:
    data = json.loads(path.read_text())
    return list(data["steps"]), list(data["records"])


async def measure(broker: Broker, backend: Backend, *, mode: str, n: int, rate: float, max_concurrent: int,
                  prefetch: int) -> Breakdown:
    """One traced run of the listener: `backlog` drains `n` pre-loaded starts; `paced` sends `rate`/s for n/rate s."""
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        path = Path(tmp) / "trace.json"
        if mode == "backlog":
            t = await listener_throughput.measure(broker, backend, n, max_concurrent=max_concurrent,
                                                  prefetch=prefetch, trace_path=path)
            per_second = t.per_second
        else:
            lat = await latency.measure(broker, backend, rate=rate, seconds=n / rate, max_concurrent=max_concurrent,
                                        prefetch=prefetch, trace_path=path)
            per_second = lat.achieved_rate
        steps, records = _load(path)
    # The warm-up message is traced too; it is one among hundreds and does not move a median.
    return Breakdown(mode, max_concurrent, prefetch, len(records), per_second, summarise(steps, records))


def table(breakdowns: list[Breakdown]) -> list[str]:
    """A Markdown table: one row per segment, one column per traced run."""
    if not breakdowns:
        return []
    head = "| segment | " + " | ".join(
        f"{b.mode}, {b.max_concurrent} concurrent, {b.per_second:,.0f}/s: p50 (p90) ms" for b in breakdowns) + " |"
    lines = [head, "| --- |" + " --- |" * len(breakdowns)]
    for i, (label, _, _) in enumerate(SEGMENTS):
        cells = [f"{b.segments[i].p50_ms:.2f} ({b.segments[i].p90_ms:.2f})" for b in breakdowns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines

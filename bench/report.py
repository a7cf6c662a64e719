"""The machine description, the printed table, and bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import localdts_bench

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("azure-servicebus", "durabletask", "durabletask-azuremanaged", "grpcio", "python-qpid-proton")


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = int(line.split()[1]) / 1024 / 1024
                    break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def save(results: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), **to_jsonable(results)}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def table(results: dict[str, Any]) -> str:
    """The Markdown table the README's performance section shows."""
    r = results
    rows: list[tuple[str, str, str, str]] = []
    cfg = r["config"]
    shape = f"{cfg['max_concurrent']} concurrent, prefetch {cfg['prefetch']}"
    if "raw_dts" in r:
        d = r["raw_dts"]
        rows.append(("1. Raw DTS ceiling", f"{_num(d.per_second)} starts/s",
                     f"async DTS client, {r['dts_in_flight']} in flight, {d.n:,} starts", ""))
    if "raw_servicebus" in r:
        s = r["raw_servicebus"]
        s1 = r.get("raw_servicebus_serial")
        detail = f"receive + complete, {shape}, {s.n:,} msgs"
        value = f"{_num(s.per_second)} msgs/s"
        if s1 is not None:
            value += f" ({_num(s1.per_second)} serial)"
            detail += "; in brackets: one complete awaited at a time"
        rows.append(("2. Raw Service Bus ceiling", value, detail, ""))
    t = r.get("listener")
    if t is not None:
        rows.append(("3. Listener throughput", f"{_num(t.per_second)} starts/s",
                     f"{t.n:,} pre-loaded starts, {shape}; checked in DTS", verdict(t.per_second >= 500)))
    ratio = r.get("ratio")
    if ratio is not None:
        rows.append(("4. Ratio listener ÷ min(1, 2)", f"{ratio['value']:.2f}",
                     f"min(1, 2) = {_num(ratio['ceiling'])}/s ({ratio['ceiling_is']}); both SDKs' work in one "
                     f"loop, 1/(1/row 1 + 1/row 2) = {_num(ratio['sdk_serial'])}/s: listener at "
                     f"{ratio['vs_sdk_serial']:.2f} of it", verdict(ratio["value"] >= 0.8)))
    lat = r.get("latency")
    if lat is not None:
        rows.append(("5. Latency publish → created", f"p50 {lat.ms.p50:.1f} / p95 {lat.ms.p95:.1f} / "
                     f"p99 {lat.ms.p99:.1f} ms", f"{lat.rate:g} msgs/s for {lat.seconds:.0f} s ({lat.ms.n} msgs)",
                     verdict(lat.ms.p50 <= 20)))
    e2e = r.get("end_to_end")
    if e2e is not None:
        rows.append(("6. End to end (hello_cities)", f"{_num(e2e.per_second, 1)} completed/s",
                     f"{e2e.n:,} orchestrations, listener + co-hosted worker", ""))
    mem = r.get("memory")
    if mem is not None:
        rows.append(("7. Peak RSS, listener", f"{mem.peak_rss_mib:.0f} MiB",
                     f"{mem.backlog:,}-message backlog (idle: {mem.idle_rss_mib:.0f} MiB)",
                     verdict(mem.peak_rss_mib * 1.048576 <= 150)))
    dts = r.get("localdts")
    if dts is not None:
        ratio = dts.ratio("durable")
        if ratio is not None:
            rows.append(("8. localdts durable ÷ SDK in-memory backend",
                         f"{ratio.starts_per_s:.2f}x starts/s, {ratio.hellos_per_s:.2f}x hello_cities/s",
                         "same run, medians; table below",
                         verdict(min(ratio.starts_per_s, ratio.hellos_per_s) >= 0.5)))
    lines = ["| Row | Result | How | Target |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    sweep = r.get("sweep")
    if sweep:
        lines += ["", f"Sweep of row 3 ({sweep[0].n:,} messages per cell), starts/s, "
                      "listener CPU ms per message in brackets:", ""]
        prefetches = sorted({s.prefetch for s in sweep})
        lines.append("| MAX_CONCURRENT_MESSAGES | " + " | ".join(f"PREFETCH_COUNT={p}" for p in prefetches) + " |")
        lines.append("| --- |" + " --- |" * len(prefetches))
        for c in sorted({s.max_concurrent for s in sweep}):
            cells = []
            for p in prefetches:
                hit = [s for s in sweep if s.max_concurrent == c and s.prefetch == p]
                cells.append(f"{_num(hit[0].per_second)} ({hit[0].listener_cpu_s / hit[0].n * 1000:.2f})"
                             if hit else "-")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if dts is not None:
        lines += ["", f"Row 8, localdts against the SDK's in-memory backend ({localdts_bench.describe(dts)}; ratios "
                      "of the medians, in brackets the range of the per-repeat ratios):", "",
                  *localdts_bench.table(dts)]
    m = r["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
                  f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
              f"Whole run: {r.get('total_seconds', 0):.0f} s."]
    return "\n".join(lines)

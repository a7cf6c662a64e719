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

from bench import breakdown, compare, dashboard_bench, localdts_bench, replicas, sessions_bench, workflows

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Issue 28's targets for the listener (rows 4 and 9).
TARGET_VS_NAIVE_SYNC = 2.5
TARGET_VS_SDKS = 1.2  # throughput against the SDKs' combined ceiling
TARGET_CPU_VS_SDKS = 1.2  # listener CPU per message against the SDKs' own
TARGET_CPU_MS = 0.35
TARGET_PROXIED_VS_NAIVE_SYNC = 20.0
PACKAGES = ("azure-servicebus", "durabletask", "durabletask-azuremanaged", "grpcio", "python-qpid-proton", "uvloop")


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


def _spread(results: dict[str, list[Any]], name: str, figure: Any = None) -> compare.Spread | None:
    runs = results.get(name)
    if not runs:
        return None
    return compare.spread(runs, figure) if figure is not None else compare.spread(runs)


def ratios(loopback: dict[str, list[Any]]) -> dict[str, float]:
    """sbworker's median against each reference's median, and against the SDKs' combined ceiling."""
    med = {name: compare.spread(runs).median for name, runs in loopback.items() if runs}
    out: dict[str, float] = {}
    if "sbworker" not in med:
        return out
    for other in ("naive_sync", "naive_async"):
        if other in med:
            out[f"vs_{other}"] = med["sbworker"] / med[other]
    if "raw_dts" in med and "raw_servicebus" in med:
        out["sdk_combined"] = 1 / (1 / med["raw_dts"] + 1 / med["raw_servicebus"])
        out["vs_sdk_combined"] = med["sbworker"] / out["sdk_combined"]
    return out


def cpu_vs_sdks(loopback: dict[str, list[Any]]) -> tuple[float, float, float] | None:
    """(listener, DTS SDK, Service Bus SDK) CPU ms per message, medians: the listener process's in row 3, the bench
    process's while it ran rows 1 (async DTS client) and 2 (aio receive + complete)."""
    if not all(loopback.get(k) for k in ("sbworker", "raw_dts", "raw_servicebus")):
        return None

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return (median([r.listener_cpu_s / r.n * 1000 for r in loopback["sbworker"]]),
            median([r.bench_cpu_s / r.n * 1000 for r in loopback["raw_dts"]]),
            median([r.bench_cpu_s / r.n * 1000 for r in loopback["raw_servicebus"]]))


def _cpu_ms(runs: list[Any]) -> str:
    per_message = sorted(r.listener_cpu_s / r.n * 1000 for r in runs)
    return f"{per_message[len(per_message) // 2]:.2f}"


def table(results: dict[str, Any]) -> str:
    """The Markdown tables the README's Performance section shows (every figure from this one run)."""
    r = results
    rows: list[tuple[str, str, str, str]] = []
    cfg = r["config"]
    shape = f"{cfg['max_concurrent']} concurrent, prefetch {cfg['prefetch']}"
    loop = r.get("loopback", {})
    reps = r.get("repeats", 1)
    how = f"median (min-max) of {reps} rotated rounds" if reps > 1 else "one run"
    dts = _spread(loop, "raw_dts")
    if dts is not None:
        rows.append(("1. Raw DTS ceiling", f"{dts.text()} starts/s",
                     f"async DTS client, {r['dts_in_flight']} in flight, {loop['raw_dts'][0].n:,} starts; {how}", ""))
    sb = _spread(loop, "raw_servicebus")
    if sb is not None:
        value = f"{sb.text()} msgs/s"
        conc = r.get("raw_servicebus_concurrent")
        detail = f"aio receive + complete, {shape}, one complete awaited at a time; {how}"
        if conc is not None:
            value += f"; {_num(conc.per_second)} with {cfg['max_concurrent']} awaited at once"
        rows.append(("2. Raw Service Bus ceiling", value, detail, ""))
    if "sbworker" in loop:
        parts = []
        for name, label in (("sbworker", "sbworker"), ("naive_sync", "naive sync"), ("naive_async", "naive async")):
            spread = _spread(loop, name)
            if spread is not None:
                parts.append(f"{label} {spread.text()}/s ({_cpu_ms(loop[name])} ms CPU/msg)")
        rows.append(("3. Listener throughput, loopback", "; ".join(parts),
                     f"pre-loaded starts, checked in DTS; sbworker {shape}; {how}; CPU: the listener "
                     "process's, median", ""))
    ratio = r.get("ratios", {})
    if ratio:
        parts, ok = [], []
        if "vs_naive_sync" in ratio:
            parts.append(f"{ratio['vs_naive_sync']:.2f}x naive sync (target {TARGET_VS_NAIVE_SYNC:g}x)")
            ok.append(ratio["vs_naive_sync"] >= TARGET_VS_NAIVE_SYNC)
        if "vs_naive_async" in ratio:
            parts.append(f"{ratio['vs_naive_async']:.1f}x naive async")
        if "vs_sdk_combined" in ratio:
            parts.append(f"{ratio['vs_sdk_combined']:.2f}x the SDKs' combined ceiling "
                         f"1/(1/row 1 + 1/row 2) = {_num(ratio['sdk_combined'])}/s (target {TARGET_VS_SDKS:g}x)")
            ok.append(ratio["vs_sdk_combined"] >= TARGET_VS_SDKS)
        cpu = cpu_vs_sdks(loop)
        if cpu is not None:
            ours, dts_sdk, sb_sdk = cpu
            parts.append(f"listener CPU {ours:.2f} ms/msg = {ours / (dts_sdk + sb_sdk):.2f}x the SDKs' own "
                         f"({dts_sdk:.2f} + {sb_sdk:.2f} ms, rows 1-2; target ≤ {TARGET_CPU_VS_SDKS:g}x, and "
                         f"≤ {TARGET_CPU_MS:g} ms: {'met' if ours <= TARGET_CPU_MS else 'missed'})")
            ok.append(ours / (dts_sdk + sb_sdk) <= TARGET_CPU_VS_SDKS)
        rows.append(("4. sbworker ÷ references, loopback", "; ".join(parts),
                     "ratios of row 3's medians; CPU: medians of the listener process and of the bench process "
                     "running rows 1 and 2", verdict(all(ok)) if ok else ""))
    lat = r.get("latency")
    if lat is not None:
        rows.append(("5. Latency publish → created", f"p50 {lat.ms.p50:.1f} / p95 {lat.ms.p95:.1f} / "
                     f"p99 {lat.ms.p99:.1f} ms", f"{lat.rate:g} msgs/s for {lat.seconds:.0f} s ({lat.ms.n} msgs)",
                     verdict(lat.ms.p50 <= 10)))
    e2e = r.get("end_to_end", {})
    co, sp = _spread(e2e, "cohosted"), _spread(e2e, "split")
    if co is not None and sp is not None:
        e2e_ratio = co.median / sp.median
        rows.append(("6. End to end (hello_cities), co-hosted ÷ plain worker",
                     f"{e2e_ratio:.2f}x: {co.text(1)}/s co-hosted, {sp.text(1)}/s split",
                     f"{e2e['cohosted'][0].n:,} orchestrations; `sbworker run` against `sbworker run --no-worker` "
                     f"+ a plain durabletask worker process; {how}", verdict(e2e_ratio >= 0.9)))
    mem = r.get("memory")
    if mem is not None:
        rows.append(("7. Peak RSS, listener", f"{mem.peak_rss_mib:.0f} MiB",
                     f"{mem.backlog:,}-message backlog (idle: {mem.idle_rss_mib:.0f} MiB)",
                     verdict(mem.peak_rss_mib * 1.048576 <= 150)))
    ldts = r.get("localdts")
    if ldts is not None:
        lratio = ldts.ratio("durable")
        if lratio is not None:
            rows.append(("8. localdts durable ÷ SDK in-memory backend",
                         f"{lratio.starts_per_s:.2f}x starts/s, {lratio.hellos_per_s:.2f}x hello_cities/s",
                         "same run, medians; table below",
                         verdict(min(lratio.starts_per_s, lratio.hellos_per_s) >= 0.5)))
    proxied = r.get("proxied", {})
    if "sbworker" in proxied:
        parts = []
        for name, label in (("sbworker", "sbworker"), ("naive_sync", "naive sync"), ("naive_async", "naive async")):
            spread = _spread(proxied, name)
            if spread is not None:
                parts.append(f"{label} {spread.text()}/s")
        med = {k: compare.spread(v).median for k, v in proxied.items() if v}
        target = ""
        if "naive_sync" in med:
            vs_sync = med["sbworker"] / med["naive_sync"]
            parts.append(f"sbworker ÷ naive sync {vs_sync:.1f}x (target {TARGET_PROXIED_VS_NAIVE_SYNC:g}x)")
            target = verdict(vs_sync >= TARGET_PROXIED_VS_NAIVE_SYNC)
        if "naive_async" in med:
            parts.append(f"÷ naive async {med['sbworker'] / med['naive_async']:.1f}x")
        rows.append((f"9. Through a {r.get('proxy_delay_ms', 2):g} ms-each-way proxy", "; ".join(parts),
                     f"bench.delayproxy on both the Service Bus and the DTS connection of the listener; {how}",
                     target))
    board = r.get("dashboard")
    if board is not None:
        worst = board.worst
        rows.append((f"10. Dashboard at {board.instances:,} instances", f"worst p95 {worst.p95_ms:.0f} ms "
                     f"({worst.what}); `sbworker list --limit 50` {board.list_ms:.0f} ms",
                     "every list page, filter and the overview, over HTTP; table below",
                     verdict(worst.p95_ms <= dashboard_bench.TARGET_P95_MS)))
    flows = r.get("workflows")
    if flows is not None:
        rows.append(workflows.row(flows, how))
    scaled = r.get("replicas")
    if scaled is not None:
        rows.append(replicas.row(scaled, how))
    sessions = r.get("sessions", {})
    if sessions.get("sessions") and sessions.get("plain"):
        with_s, plain = sessions["sessions"], sessions["plain"]
        rate, p50 = compare.spread(with_s), compare.spread(with_s, lambda run: run.latency_ms.p50)
        base, base_p50 = compare.spread(plain), compare.spread(plain, lambda run: run.latency_ms.p50)
        first = with_s[0]
        rows.append((f"13. Sessions ({sessions_bench.SESSIONS} sessions) beside none",
                     f"{rate.text()} starts/s, p50 {p50.text(0, ' ms')}; without sessions {base.text()} starts/s, "
                     f"p50 {base_p50.text(0, ' ms')} ({rate.median / base.median:.2f}x)",
                     f"{first.n:,} starts round-robin over the sessions from a backlog, then {first.rate:g} msgs/s "
                     f"for {first.latency_ms.n / first.rate:.0f} s; MAX_CONCURRENT_SESSIONS={first.max_sessions}, "
                     f"SESSION_IDLE_SECONDS={first.idle_seconds:g}; the same listener on a plain queue; {how}", ""))
    lines = ["| Row | Result | How | Target |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    sweep = r.get("sweep")
    if sweep:
        lines += ["", f"Sweep of sbworker ({sweep[0].n:,} messages per cell, one run each), starts/s, listener CPU "
                      "ms per message in brackets:", ""]
        delays = sorted({s.delay_ms for s in sweep})
        heads = [f"loopback, prefetch {cfg['prefetch']}" if d == 0 else f"{d:g} ms proxy, prefetch {cfg['prefetch']}"
                 for d in delays]
        lines.append("| MAX_CONCURRENT_MESSAGES | " + " | ".join(heads) + " |")
        lines.append("| --- |" + " --- |" * len(delays))

        def cell(hit: list[Any]) -> str:
            return f"{_num(hit[0].per_second)} ({hit[0].listener_cpu_s / hit[0].n * 1000:.2f})" if hit else "-"

        for c in sorted({s.max_concurrent for s in sweep if s.prefetch == cfg["prefetch"]}):
            cells = [cell([s for s in sweep if s.max_concurrent == c and s.prefetch == cfg["prefetch"]
                           and s.delay_ms == d]) for d in delays]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        for s in sweep:
            if s.prefetch != cfg["prefetch"]:
                lines.append(f"| {s.max_concurrent}, PREFETCH_COUNT={s.prefetch} | {cell([s])} |"
                             + " |" * (len(delays) - 1))
    traced = r.get("breakdown")
    if traced:
        lines += ["", "Where a message's time goes at the defaults (bench.msgtrace: one timestamp per step inside a "
                      "traced `sbworker run`; medians, p90 in brackets):", "", *breakdown.table(traced)]
    if ldts is not None:
        lines += ["", f"Row 8, localdts against the SDK's in-memory backend ({localdts_bench.describe(ldts)}; "
                      "ratios of the medians, in brackets the range of the per-repeat ratios):", "",
                  *localdts_bench.table(ldts)]
    if flows is not None and flows.sweep:
        lines += ["", *workflows.table(flows)]
    if scaled is not None:
        lines += ["", f"Row 12 ({replicas.describe(scaled)}; medians):", "", *replicas.table(scaled)]
    if board is not None:
        lines += ["", f"Row 10, the dashboard at {dashboard_bench.describe(board)}:", "", *dashboard_bench.table(board)]
    session_sweep = r.get("sessions_sweep")
    if session_sweep:
        lines += ["", f"Row 13's sweep ({session_sweep[0].n:,} starts over {sessions_bench.SESSIONS} sessions, then "
                      f"{session_sweep[0].rate:g} msgs/s; one run each), which chose the defaults:", "",
                  *sessions_bench.sweep_table(session_sweep)]
    m = r["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
                  f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
              f"Whole run: {r.get('total_seconds', 0):.0f} s" + _load(r.get("load")) + "."]
    return "\n".join(lines)


def _load(load: dict[str, float] | None) -> str:
    """The machine's 1-minute load average around the run: on shared cores it explains a slow run."""
    if not load:
        return ""
    return f"; load average (1 min) {load['start']:.1f} at the start, {load['end']:.1f} at the end"


README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def readme_block(results: dict[str, Any]) -> str:
    """The README's generated part: when and how the run was made, then its tables."""
    when = results.get("finished_at") or datetime.now(UTC).isoformat(timespec="minutes")
    cfg = results["config"]
    kind = "`make bench --quick`" if results.get("quick") else "`make bench`"
    head = (f"Generated by {kind} (`python -m bench --write-readme`) on {when[:16].replace('T', ' ')} UTC; "
            f"defaults `MAX_CONCURRENT_MESSAGES={cfg['max_concurrent']}`, `PREFETCH_COUNT={cfg['prefetch']}`"
            + (f", the listener on {cfg['event_loop']}" if cfg.get("event_loop") else "") + ". "
            "Every figure below comes from that one run.")
    return head + "\n\n" + table(results)


def write_readme(path: Path, block: str) -> None:
    """Replace what lies between the bench markers in `path` (the markers stay); refuse if they are missing."""
    text = path.read_text()
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path}: no {BEGIN} ... {END} block to rewrite")
    path.write_text(text[:begin + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[end:])

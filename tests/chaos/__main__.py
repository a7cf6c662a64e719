"""`python -m tests.chaos run --seed 7 --duration 60` (what `make chaos` runs); `schedule` prints a seed's schedule
without running it; `check HISTORY` judges a recorded history again. Exit code 1 when a campaign found a violation.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tests.chaos import checker
from tests.chaos.history import read
from tests.chaos.plan import make_plan, summary
from tests.chaos.runner import Campaign
from tests.chaos.schedule import DEFAULT_WINDOW, make_schedule

DEFAULT_OUT = Path(".chaos")


def seeds(text: str) -> list[int]:
    """`7`, `1-10` or `1,4,9`."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "schedule"):
        p = sub.add_parser(name)
        p.add_argument("--seed", type=seeds, default=[1], help="a seed, a range 1-10 or a list 1,4,9")
        p.add_argument("--duration", type=float, default=60.0, help="seconds of faults and publishing per seed")
        p.add_argument("--replicas", type=int, choices=(2, 3), default=None,
                       help="sbworker run replicas (default: 2 or 3, chosen by the seed)")
        p.add_argument("--window", type=float, default=DEFAULT_WINDOW,
                       help="APPROVAL_NOT_FOUND_WINDOW_SECONDS of the replicas")
        p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where each seed's history and logs go")
    check = sub.add_parser("check")
    check.add_argument("history", type=Path)
    args = parser.parse_args(argv)

    if args.command == "check":
        records = read(args.history)
        report = checker.check(records)
        print(checker.render(report, records, limit=1000))
        return 0 if report.ok else 1
    if args.command == "schedule":
        for seed in args.seed:
            print(make_schedule(seed, args.duration, args.replicas).describe())
            plan = make_plan(seed, args.duration)
            print(f"workload: {len(plan)} messages {summary(plan)}\n")
        return 0
    reports = []
    for seed in args.seed:
        campaign = Campaign(seed, args.duration, args.out / f"seed-{seed}", args.replicas, args.window)
        reports.append(campaign.run())
        print()
    if len(reports) > 1:
        faults: Counter[str] = Counter()
        known: Counter[str] = Counter()
        for r in reports:
            faults.update(r.stats.get("faults", {}))
            known.update(r.known)
        print(f"{len(reports)} seeds x {args.duration:g}s: {sum(r.stats['faults_total'] for r in reports)} faults "
              f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}); "
              f"{sum(r.stats['messages'] for r in reports)} messages; "
              f"{sum(len(r.failures) for r in reports)} violations, "
              f"{sum(known.values())} of known open findings {dict(known)} "
              f"(seeds with any: {[r.campaign.get('seed') for r in reports if not r.ok] or 'none'})")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

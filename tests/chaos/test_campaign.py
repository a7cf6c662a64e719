"""A short seeded campaign (`make test-slow`, so CI): kill -9, SIGTERM and pauses of replicas, localbus and
localdts, and faulty links, while the workload publishes every story; the checker must find nothing but the known
open findings it lists. Two campaigns of about 45 s each: a fixed seed, so a regression shows on every run, and a
fresh random seed, so CI keeps exploring; each prints its seed and replay command before it starts.
`CHAOS_SEEDS=4-6` runs those seeds instead; `make chaos` runs long ones.

The random seed is drawn among those whose schedule leaves every DTS link unstalled (no half-open or partition on
one, about 63% of seeds): a worker's silent work-item stream is noticed by gRPC keepalive only after about 60 s
(README: Guarantees), which alone would double the campaign's time. `make chaos` campaigns stall DTS links, and
tests/reliability/test_network_faults.py bounds that detection.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.__main__ import seeds
from tests.chaos.checker import render
from tests.chaos.history import read
from tests.chaos.runner import Campaign
from tests.chaos.schedule import make_schedule

DURATION = 20.0  # seconds of faults and publishing; with start-up, drain and reading the outcomes about 45 s
WINDOW = 15.0  # APPROVAL_NOT_FOUND_WINDOW_SECONDS: approvals for unknown instances end in the DLQ this soon
# At 20 s seed 3 kills a replica, localdts and localbus under bandwidth caps while eleven early approvals wait
# (the shape of the campaigns' findings F2 and F3, tests/chaos/checker.py); None draws a new seed each run.
FIXED_SEED = 3


def _draw_seed() -> int:
    """Not from `random`'s own state: pytest-randomly reseeds that with its seed for every test."""
    draw = random.SystemRandom()
    while True:
        seed = draw.randrange(1, 1_000_000)
        if not any(f.kind in ("half_open", "partition") and f.target.endswith(".dts")
                   for f in make_schedule(seed, DURATION).faults):
            return seed


def _seeds() -> list[int | None]:
    chosen = os.environ.get("CHAOS_SEEDS")
    return [*seeds(chosen)] if chosen else [FIXED_SEED, None]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", _seeds(), ids=lambda s: "random" if s is None else f"seed{s}")
def test_a_short_campaign_breaks_no_guarantee(seed: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    drawn = seed is None
    if seed is None:
        seed = _draw_seed()
    campaign = Campaign(seed, DURATION, tmp_path / f"seed-{seed}", window=WINDOW)
    with capsys.disabled():
        print(f"\nchaos campaign, {'random' if drawn else 'fixed'} seed {seed}: replay with `{campaign.replay}`"
              f" or `CHAOS_SEEDS={seed} make test-slow PYTEST_ARGS=tests/chaos/test_campaign.py`")
    report = campaign.run()  # its schedule and verdict are in the captured output a failure shows
    assert report.stats["faults_total"] >= 4 and report.stats["messages"] >= 60, report.stats
    assert report.stats["converged"], "the stack did not settle after the faults:\n" + render(
        report, read(campaign.history_path))
    assert report.ok, render(report, read(campaign.history_path))

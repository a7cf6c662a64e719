"""A short seeded campaign per seed (`make test-slow`, so CI): kill -9, SIGTERM and pauses of replicas, localbus and
localdts, and faulty links, while the workload publishes every story; the checker must find nothing but the known
open findings it lists. Two campaigns of about 45 s each: a fixed seed, so a regression shows on every run, and a
random seed drawn for the run, so CI keeps exploring. tests/chaos/short.py holds the settings and draws the seed;
the end of the run names both seeds with their replay commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos import short
from tests.chaos.__main__ import seeds
from tests.chaos.checker import render
from tests.chaos.history import read
from tests.chaos.runner import Campaign


def _ids() -> list[str]:
    chosen = os.environ.get("CHAOS_SEEDS")
    return [f"seed{n}" for n in seeds(chosen)] if chosen else [f"seed{short.FIXED_SEED}", "random"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("test_id", _ids())
def test_a_short_campaign_breaks_no_guarantee(test_id: str, tmp_path: Path) -> None:
    seed = short.seed_of(test_id)
    campaign = Campaign(seed, short.DURATION, tmp_path / f"seed-{seed}", window=short.WINDOW)
    print(f"chaos campaign, seed {seed}: replay with {short.replay(seed)}")
    report = campaign.run()  # the schedule, the verdict and the replay command go to the captured output
    assert report.stats["faults_total"] >= 4 and report.stats["messages"] >= 60, (seed, report.stats)
    assert report.stats["converged"], "the stack did not settle after the faults:\n" + render(
        report, read(campaign.history_path))
    assert report.ok, render(report, read(campaign.history_path))

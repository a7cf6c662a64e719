"""A short seeded campaign per seed (`make test-slow`, so CI): kill -9, SIGTERM and pauses of replicas, localbus
and localdts, and faulty links, while the workload publishes every story; the checker must find nothing.
`CHAOS_SEEDS=4-6` runs other seeds; `make chaos` runs long ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.__main__ import seeds
from tests.chaos.checker import render
from tests.chaos.history import read
from tests.chaos.runner import Campaign

DURATION = 30.0  # seconds of faults and publishing per seed; with start-up and drain about a minute each
WINDOW = 15.0  # APPROVAL_NOT_FOUND_WINDOW_SECONDS: approvals for unknown instances end in the DLQ this soon


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", seeds(os.environ.get("CHAOS_SEEDS", "1-3")))
def test_a_short_campaign_breaks_no_guarantee(seed: int, tmp_path: Path) -> None:
    campaign = Campaign(seed, DURATION, tmp_path / f"seed-{seed}", window=WINDOW)
    report = campaign.run()
    assert report.stats["faults_total"] >= 5 and report.stats["messages"] >= 100, report.stats
    assert report.stats["converged"], "the stack did not settle after the faults:\n" + render(
        report, read(campaign.history_path))
    assert report.ok, render(report, read(campaign.history_path))

"""The localdts rows of the bench (bench.localdts_bench, row 8 of make bench): ratios and table from given figures."""

from __future__ import annotations

from bench import localdts_bench as lb
from bench import report

F = lb.Figures


def _comparison() -> lb.Comparison:
    return lb.Comparison(3, 2000, 200, "2026-11-29 00:00 UTC", {
        "sdk": [F(4000, 150), F(3000, 120), F(5000, 160)],
        "memory": [F(3600, 140), F(3000, 120), F(4000, 150)],
        "durable": [F(2400, 120), F(1800, 100), F(2600, 110)],
    })


def test_ratios_are_of_the_medians_and_the_spread_per_repeat() -> None:
    c = _comparison()
    ratio = c.ratio("durable")
    assert ratio is not None
    assert (ratio.starts_per_s, ratio.hellos_per_s) == (2400 / 4000, 110 / 150)
    spread = c.spread("durable")
    assert spread is not None
    low, high = spread
    assert (low.starts_per_s, high.starts_per_s) == (2600 / 5000, 2400 / 4000)
    assert c.ratio("nofsync") is None


def test_table_and_row_8() -> None:
    c = _comparison()
    lines = lb.table(c)
    assert lines[2].startswith("| SDK in-memory backend") and "1.00x" in lines[2]
    assert "| 0.60x (0.52-0.60) |" in lines[4]
    machine = {"cpu": "x", "cores": 2, "memory_gib": 1.0, "kernel": "k", "python": "3.11", "packages": {}}
    text = report.table({"machine": machine, "config": {"max_concurrent": 32, "prefetch": 100}, "localdts": c})
    assert "| 8. localdts durable ÷ SDK in-memory backend | 0.60x starts/s, 0.73x hello_cities/s |" in text
    assert "medians of 3 interleaved repeats" in text

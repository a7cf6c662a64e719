"""Side-by-side comparisons: every contender measured `repeats` times, the order rotated each round.

Figures on this shared 2-core machine drift by ±30% over minutes, so a ratio is only meaningful between runs made
close together: each round runs every contender once, and round r starts with contender r (a slow spell then
hits each contender in turn, not always the same one). A ratio is of the medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spread:
    """min / median / max of one contender's repeats (of whatever per-run figure was asked for)."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def text(self, digits: int = 0, unit: str = "") -> str:
        """`1,234 (1,100-1,300)`: the median, then the range, when there was more than one run."""
        median = f"{self.median:,.{digits}f}{unit}"
        if len(self.values) < 2:
            return median
        return f"{median} ({self.min:,.{digits}f}-{self.max:,.{digits}f})"


def rotations(names: Sequence[str], repeats: int) -> list[list[str]]:
    """The order of each round: round r starts with name r (mod len)."""
    k = len(names)
    return [[*names[r % k:], *names[:r % k]] for r in range(repeats)]


async def rotated(contenders: dict[str, Callable[[], Awaitable[Any]]], repeats: int,
                  say: Callable[[str], None] = lambda _text: None,
                  figure: Callable[[Any], float] = lambda result: float(result.per_second)) -> dict[str, list[Any]]:
    """Run each contender once per round, rounds in rotated order; returns every result, per contender."""
    results: dict[str, list[Any]] = {name: [] for name in contenders}
    for r, order in enumerate(rotations(list(contenders), repeats)):
        for name in order:
            result = await contenders[name]()
            results[name].append(result)
            say(f"   round {r + 1}/{repeats}: {name} {figure(result):,.1f}")
    return results


def spread(results: list[Any], figure: Callable[[Any], float] = lambda result: float(result.per_second)) -> Spread:
    return Spread(tuple(figure(result) for result in results))

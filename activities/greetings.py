"""The greeting activity used by the chaining and fan-out/fan-in workflows."""

from __future__ import annotations

from typing import Any


def say_hello(ctx: Any, name: str) -> str:
    """Greet one city. Kept trivial on purpose: the patterns, not the work, are the point."""
    return f"Hello {name}!"

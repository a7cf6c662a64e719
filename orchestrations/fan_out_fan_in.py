"""Fan-out/fan-in: schedule every activity at once, then wait for all of them."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from durabletask import task

from activities.greetings import say_hello

log = logging.getLogger(__name__)

DEFAULT_CITIES = ("Tokyo", "Seattle", "London", "Paris", "Berlin")


def fan_out_fan_in(ctx: task.OrchestrationContext, cities: Any) -> Generator[task.Task[Any], Any, list[str]]:
    """Greet every city in parallel; results come back in input order, whatever order they finish in."""
    names = [str(c) for c in cities] if isinstance(cities, list) else list(DEFAULT_CITIES)
    if not ctx.is_replaying:
        log.info("fan_out_fan_in %s: %d cities", ctx.instance_id, len(names))
    greetings = yield task.when_all([ctx.call_activity(say_hello, input=name) for name in names])
    return list(greetings)

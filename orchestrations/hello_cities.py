"""Function chaining: each step starts only after the previous one finished."""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from durabletask import task

from activities.greetings import say_hello

log = logging.getLogger(__name__)

CITIES = ("Tokyo", "Seattle", "London")


def hello_cities(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, str]:
    """Greet three cities in order and join the greetings."""
    if not ctx.is_replaying:
        log.info("hello_cities %s started", ctx.instance_id)
    greetings: list[str] = []
    for city in CITIES:
        greeting = yield ctx.call_activity(say_hello, input=city)
        greetings.append(greeting)
    return ", ".join(greetings)

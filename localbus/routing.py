"""Which subscriptions of a topic take a message, decided without ever stalling the I/O loop.

Evaluating a topic's rules is cheap in the common case and happens inline. A message whose estimated cost (the
topic's filter steps, plus its LIKE patterns' passes over the message's longest property value) is above
:data:`INLINE_BUDGET` is evaluated on a worker thread instead, and the loop keeps serving every other client
meanwhile; only that sender's acknowledgement waits. No single call the worker makes holds the GIL for long
(LIKE searches long values window by window), so the loop thread always gets its turn.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .sqlfilter import MessageView
from .topics import Rule

# About 1 ms of evaluation: a filter step costs what a LIKE pass over NODE_COST characters does.
INLINE_BUDGET = 1_000_000
NODE_COST = 200


class Cancelled(Exception):
    """The broker stopped while a message was being routed (it was never acknowledged, so nothing is lost)."""


def rules_cost(rule_sets: Sequence[Sequence[Rule]]) -> tuple[int, int]:
    """(filter steps, LIKE pattern length) of evaluating every rule once."""
    rules = [rule for rule_set in rule_sets for rule in rule_set]
    return sum(rule.matches.nodes for rule in rules), sum(rule.matches.like_units for rule in rules)


def message_cost(view: MessageView, nodes: int, like_units: int) -> int:
    """Upper bound, in NODE_COST units, of evaluating rules of that cost against this message."""
    longest = max((len(v) for v in (*view.system.values(), *view.user.values()) if isinstance(v, str | bytes)),
                  default=0)
    return nodes * NODE_COST + like_units * longest


def matching(rule_sets: Sequence[Sequence[Rule]], view: MessageView,
             cancelled: threading.Event | None = None) -> list[int]:
    """Indexes of the rule sets (one per subscription) with a rule that matches."""
    out = []
    for index, rules in enumerate(rule_sets):
        for rule in rules:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled("localbus stopped while routing a message")
            if rule.matches(view):
                out.append(index)
                break
    return out


class RoutingWorker:
    """One daemon thread for expensive evaluations; each result is handed to ``post``, which runs it on the loop.

    The thread reads only compiled rules (immutable) and a :class:`MessageView` made for it, never broker state.
    """

    def __init__(self, post: Callable[[Callable[[], None]], Any]) -> None:
        self._post = post
        self._jobs: queue.SimpleQueue[tuple[Callable[[threading.Event], Any], Callable[[Any], None]] | None] = (
            queue.SimpleQueue())
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, work: Callable[[threading.Event], Any], on_result: Callable[[Any], None]) -> None:
        """Run ``work(cancelled)`` on the worker; ``on_result`` gets its result, or the exception it raised."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="localbus-routing", daemon=True)
            self._thread.start()
        self._jobs.put((work, on_result))

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, on_result = job
            try:
                result: Any = work(self._cancelled)
            except Exception as exc:  # handed back: the sender learns of it, the loop carries on
                result = exc
            if self._cancelled.is_set():
                return
            self._post(functools.partial(on_result, result))

    def close(self) -> None:
        """Stop: the evaluation under way ends at its next rule; queued ones are dropped (never acknowledged)."""
        self._cancelled.set()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(5)

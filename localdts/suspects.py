"""Which work item ended a worker's stream: made unambiguous by offering the suspects alone.

A worker's ``GetWorkItems`` stream that ends before it answered its work items says which items it lost, not
which one ended it: one item the worker cannot receive (over its gRPC receive limit, or undecodable) or that
crashes it takes down the stream and, with it, every other item the stream held. Counting that end against all
of them failed innocent orchestrations with the guilty one (``WorkItemNeverAnswered``). So:

- a stream that ends holding ONE unanswered work item counts one unanswered delivery against that item;
- a stream that ends holding several counts against none of them: each becomes a *suspect*;
- a suspect, and an item that was just counted against, is offered **alone**: to a stream holding nothing,
  which then gets nothing else until it answers (or abandons) it or ends. Its next loss is unambiguous;
- suspects come before queued work, but a busy stream stops taking new work for them only when no other
  stream is free (or already emptying) to take them, so that a suspect cannot wait for ever behind steady work.

An abandon names its work item (by its completion token): it is always counted against that item.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from durabletask.testing.in_memory_backend import ActivityWorkItem

# What a worker's work item filters accept: None is everything, else name -> versions (empty: any version).
Filter = dict[str, frozenset[str]] | None
# A suspect: an orchestration (its instance id) or an activity.
Suspect = str | ActivityWorkItem


@dataclass(eq=False)
class Stream:
    """One ``GetWorkItems`` call, with the worker's filters; closed once the worker behind it is gone."""

    number: int
    orchestrations: Filter = None
    activities: Filter = None
    closed: bool = False
    alone: bool = False  # it was given a suspect: nothing else until that is answered
    emptying: bool = False  # it takes nothing new, to be free for a suspect once its items are answered


class Turn(enum.Enum):
    QUEUED = "take the next queued work item"
    SUSPECT = "take a suspect, alone"
    WAIT = "take nothing for now"


class Suspects:
    """The suspects waiting for a stream of their own, in the order they became suspects."""

    def __init__(self) -> None:
        self._queue: deque[Suspect] = deque()
        self._orchestrations: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._queue)

    def __contains__(self, instance_id: object) -> bool:
        """Whether the orchestration waits here (it must then not be queued for an ordinary offer)."""
        return instance_id in self._orchestrations

    def add(self, suspect: Suspect) -> None:
        if isinstance(suspect, str):
            if suspect in self._orchestrations:
                return
            self._orchestrations.add(suspect)
        self._queue.append(suspect)

    def withdraw(self, instance_id: str) -> None:
        """The instance ended: neither it nor its activities are offered again."""
        self._orchestrations.discard(instance_id)
        kept = [s for s in self._queue if _instance_of(s) != instance_id]
        if len(kept) != len(self._queue):
            self._queue = deque(kept)

    def any_for(self, accepts: Callable[[Suspect], bool]) -> bool:
        return any(accepts(s) for s in self._queue)

    def take(self, accepts: Callable[[Suspect], bool]) -> Suspect | None:
        """The first suspect ``accepts`` lets through, out of the queue."""
        for suspect in self._queue:
            if accepts(suspect):
                self._queue.remove(suspect)
                if isinstance(suspect, str):
                    self._orchestrations.discard(suspect)
                return suspect
        return None


def _instance_of(suspect: Suspect) -> str:
    return suspect if isinstance(suspect, str) else suspect.instance_id


def turn(stream: Stream, streams: Iterable[Stream], held: Callable[[Stream], int],
         wants: Callable[[Stream], bool]) -> Turn:
    """What ``stream`` may take next. ``held``: how many unanswered work items a stream holds; ``wants``: whether
    a suspect waits that the stream's filters accept. Updates the stream's ``alone`` and ``emptying`` marks."""
    if stream.alone and held(stream):
        return Turn.WAIT
    stream.alone = False
    if not wants(stream):
        stream.emptying = False
        return Turn.QUEUED
    if not held(stream):
        stream.emptying = False
        return Turn.SUSPECT
    others_ready = any(s is not stream and not s.closed and (s.emptying or not held(s)) and wants(s) for s in streams)
    stream.emptying = not others_ready
    return Turn.WAIT if stream.emptying else Turn.QUEUED

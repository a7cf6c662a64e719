"""The backend's instances: running ones in memory, ended ones in the store, read back only while in use.

The SDK backend reads and changes ``self._instances`` as a dict. :class:`Instances` keeps that working while
memory holds only what running instances need: a key missing from memory is looked up in the store (through
``load``) and kept in memory until the backend evicts it again, once it has ended and its last change is
written. So the cost of a start, a status read or a restart does not grow with the number of instances that
ever ran. Iterating sees the instances in memory only: every SDK call that walks all instances (query, list,
purge, clean) is replaced by one that asks the store.

Most keys looked up and missing from memory are new ids (a start), and reading the store for each of them held
the backend's lock 138 us a start (46 us of CPU; at 1,300 starts/s a fifth of the time). So a Bloom filter
(:mod:`localdts.bloom`) holds the ids the store may have beyond memory: each id that leaves memory, and, once
:meth:`Instances.cover_store` has learnt them in the background after start-up, every id the store held. A miss
the filter rules out is not read; until the filter covers the store, every miss is. Nothing reaches the store
except from memory, so that is every id it can hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager

from durabletask.testing.in_memory_backend import OrchestrationInstance

from .bloom import BloomFilter

Loader = Callable[[str], OrchestrationInstance | None]


class Instances(MutableMapping[str, OrchestrationInstance]):
    """Without ``load`` (memory mode), a plain dict."""

    def __init__(self, load: Loader | None = None) -> None:
        self._memory: dict[str, OrchestrationInstance] = {}
        self._load = load
        self.loaded: set[str] = set()  # read back from the store and not evicted since
        self._left = BloomFilter()  # every key that left memory, and once covers_store, every key stored before
        self.covers_store = False

    def may_be_stored(self, key: str) -> bool:
        """Under the backend lock: False only if the store certainly does not hold ``key`` (or it is in memory)."""
        return not self.covers_store or key in self._left

    def cover_store(self, count: int, pages: Iterable[list[str]], lock: AbstractContextManager[object],
                    stopping: threading.Event, pause: float) -> bool:
        """Without the lock (it takes it at the end): learn the ``count`` ids in ``pages`` (every id the store
        holds from before until after the walk); False if ``stopping`` was set first. It pauses ``pause`` seconds
        after each page, letting the GIL go: a loop that held it would make every call wait for it.

        What leaves memory meanwhile is added to the filter as always, and whatever the store got since this
        backend began came from memory, so once these are added too, no key the store holds is ruled out.
        """
        found = BloomFilter(count)
        for page in pages:
            found.add_new(page)
            if stopping.wait(pause):
                return False
        with lock:
            self._left.absorb(found)
            self.covers_store = True
        return True

    def _forgotten(self, key: str) -> None:
        if self._load is not None:  # in memory mode nothing is stored
            self._left.add(key)

    def get(self, key: str, default: OrchestrationInstance | None = None) -> OrchestrationInstance | None:  # type: ignore[override]
        inst = self._memory.get(key)
        if inst is None and self._load is not None and self.may_be_stored(key):
            inst = self._load(key)
            if inst is not None:
                self._memory[key] = inst
                self.loaded.add(key)
        return inst if inst is not None else default

    def in_memory(self, key: str) -> OrchestrationInstance | None:
        """The instance if it is in memory (running, or ended and in use); never reads the store."""
        return self._memory.get(key)

    def evict(self, key: str) -> None:
        if key in self._memory:
            del self[key]
        self.loaded.discard(key)

    def __getitem__(self, key: str) -> OrchestrationInstance:
        inst = self.get(key)
        if inst is None:
            raise KeyError(key)
        return inst

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: OrchestrationInstance) -> None:
        self._memory[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._memory:
            self._forgotten(key)  # before it leaves: a reader without the lock sees it in one place or the other
        del self._memory[key]
        self.loaded.discard(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._memory)

    def __len__(self) -> int:
        return len(self._memory)

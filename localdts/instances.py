"""The backend's instances: running ones in memory, ended ones in the store, read back only while in use.

The SDK backend reads and changes ``self._instances`` as a dict. :class:`Instances` keeps that working while
memory holds only what running instances need: a key missing from memory is looked up in the store (through
``load``) and kept in memory until the backend evicts it again, once it has ended and its last change is
written. So the cost of a start, a status read or a restart does not grow with the number of instances that
ever ran. Iterating sees the instances in memory only: every SDK call that walks all instances (query, list,
purge, clean) is replaced by one that asks the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping

from durabletask.testing.in_memory_backend import OrchestrationInstance

Loader = Callable[[str], OrchestrationInstance | None]


class Instances(MutableMapping[str, OrchestrationInstance]):
    """Without ``load`` (memory mode), a plain dict."""

    def __init__(self, load: Loader | None = None) -> None:
        self._memory: dict[str, OrchestrationInstance] = {}
        self._load = load
        self.loaded: set[str] = set()  # read back from the store and not evicted since

    def get(self, key: str, default: OrchestrationInstance | None = None) -> OrchestrationInstance | None:  # type: ignore[override]
        inst = self._memory.get(key)
        if inst is None and self._load is not None:
            inst = self._load(key)
            if inst is not None:
                self._memory[key] = inst
                self.loaded.add(key)
        return inst if inst is not None else default

    def in_memory(self, key: str) -> OrchestrationInstance | None:
        """The instance if it is in memory (running, or ended and in use); never reads the store."""
        return self._memory.get(key)

    def evict(self, key: str) -> None:
        self._memory.pop(key, None)
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
        del self._memory[key]
        self.loaded.discard(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._memory)

    def __len__(self) -> int:
        return len(self._memory)

"""A Bloom filter of strings that grows: "certainly not added" or "perhaps added", in 12 bits a key.

Kept in memory only (never written), so Python's own ``hash()`` (randomised per process) serves as the hash: the
positions of a key are derived from its one 64-bit hash by double hashing. A filter is a chain of stages; when
the newest stage is full, a new one twice its size with more bits a key is added, so the false-positive rate
stays bounded (~1.1% for the first stage, under 2% for the whole chain) however many keys are added.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_MASK64 = (1 << 64) - 1
FIRST_BITS_PER_KEY = 12  # with 3 hashes: a false positive ~1.1% of the time when the stage is full (5 hashes in
FIRST_HASHES = 3  # 10 bits: 0.9%, but adding a million keys took 1.6x as long)


class _Stage:
    __slots__ = ("bits", "capacity", "count", "hashes", "size")

    def __init__(self, capacity: int, bits_per_key: int, hashes: int) -> None:
        self.capacity = capacity
        self.size = max(64, capacity * bits_per_key)
        self.hashes = hashes
        self.bits = bytearray((self.size + 7) // 8)
        self.count = 0

    def add(self, keys: Iterable[str]) -> None:
        bits, size, hashes = self.bits, self.size, range(self.hashes)
        for key in keys:  # one loop for many keys: a million take ~1.2 s
            h = hash(key) & _MASK64
            a, b = h & 0xFFFFFFFF, (h >> 32) | 1
            for _ in hashes:
                p = a % size
                bits[p >> 3] |= 1 << (p & 7)
                a += b
            self.count += 1

    def has(self, h: int) -> bool:
        a, b = h & 0xFFFFFFFF, (h >> 32) | 1
        bits, size = self.bits, self.size
        for _ in range(self.hashes):
            p = a % size
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
            a += b
        return True


class BloomFilter:
    """Not thread-safe: one writer at a time, and no reader while it writes (the caller's lock)."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._stages = [_Stage(max(1, capacity), FIRST_BITS_PER_KEY, FIRST_HASHES)]

    def add(self, key: str) -> None:
        if key not in self:  # adding a key it already answers "perhaps" for would only fill the stage
            self.add_new([key])

    def add_new(self, keys: Sequence[str]) -> None:
        """Add keys known to be distinct and not added before (ids read from the store), without checking."""
        done = 0
        while done < len(keys):
            last = self._stages[-1]
            if last.count >= last.capacity:  # each later one: 2 bits a key and 1 hash more, a third the false positives
                grown = len(self._stages)
                last = _Stage(last.capacity * 2, FIRST_BITS_PER_KEY + 2 * grown, FIRST_HASHES + grown)
                self._stages.append(last)
            room = last.capacity - last.count
            last.add(keys[done:done + room])
            done += room

    def __contains__(self, key: object) -> bool:
        h = hash(key) & _MASK64
        return any(stage.has(h) for stage in self._stages)

    def absorb(self, other: BloomFilter) -> None:
        """Answer "perhaps" for every key added to ``other`` too (its stages are shared, not copied)."""
        self._stages = [*other._stages, *self._stages]

    @property
    def bytes(self) -> int:
        return sum(len(stage.bits) for stage in self._stages)

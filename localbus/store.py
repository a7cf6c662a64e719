"""Where messages live between restarts: nowhere (memory only) or an SQLite file.

The broker keeps every message in memory and writes changes through to a :class:`Persistence`. Writes of one I/O
loop iteration share one transaction, committed before any acknowledgement leaves the server (group commit), so
an acknowledged send is on disk and a burst of sends costs one commit, not one per message. Locks are never
persisted: after a restart every locked message is simply available again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACTIVE, DEFERRED, SCHEDULED = 0, 1, 2


@dataclass(frozen=True)
class StoredRow:
    """One persisted message, as loaded at start-up."""

    entity: str
    seq: int
    state: int
    delivery_count: int
    enqueued_ms: int
    expires_ms: int | None
    blob: bytes


class Persistence:
    """Memory-only persistence: every operation is a no-op. Also the interface of :class:`SqlitePersistence`."""

    durable = False

    def rows(self) -> Iterator[StoredRow]:
        return iter(())

    def last_sequences(self) -> dict[str, int]:
        return {}

    def dedup_entries(self) -> Iterator[tuple[str, str, int]]:
        return iter(())

    def insert(self, entity: str, seq: int, state: int, delivery_count: int, enqueued_ms: int,
               expires_ms: int | None, blob: bytes) -> None:
        pass

    def update(self, entity: str, seq: int, state: int, delivery_count: int, enqueued_ms: int,
               expires_ms: int | None) -> None:
        pass

    def delete(self, entity: str, seq: int) -> None:
        pass

    def set_last_sequence(self, entity: str, seq: int) -> None:
        pass

    def remember_id(self, entity: str, message_id: str, expires_ms: int) -> None:
        pass

    def forget_ids(self, entity: str, before_ms: int) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    entity TEXT NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL, delivery_count INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL, expires_ms INTEGER, blob BLOB NOT NULL, PRIMARY KEY (entity, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequences (entity TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup (
    entity TEXT NOT NULL, message_id TEXT NOT NULL, expires_ms INTEGER NOT NULL, PRIMARY KEY (entity, message_id)
) WITHOUT ROWID;
"""


class SqlitePersistence(Persistence):
    """Write-through SQLite store (WAL). ``data_path`` is a directory (``localbus.sqlite3`` inside) or a file."""

    durable = True

    def __init__(self, data_path: str | Path, synchronous: str = "FULL") -> None:
        path = Path(data_path)
        if path.suffix not in (".db", ".sqlite", ".sqlite3"):
            path.mkdir(parents=True, exist_ok=True)
            path = path / "localbus.sqlite3"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        self._in_tx = False
        self._pending_seq: dict[str, int] = {}

    def _begin(self) -> sqlite3.Connection:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True
        return self._db

    def rows(self) -> Iterator[StoredRow]:
        cursor = self._db.execute("SELECT entity, seq, state, delivery_count, enqueued_ms, expires_ms, blob "
                                  "FROM messages ORDER BY entity, seq")
        for row in cursor:
            yield StoredRow(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]))

    def last_sequences(self) -> dict[str, int]:
        return {entity: seq for entity, seq in self._db.execute("SELECT entity, last_seq FROM sequences")}

    def dedup_entries(self) -> Iterator[tuple[str, str, int]]:
        yield from self._db.execute("SELECT entity, message_id, expires_ms FROM dedup ORDER BY expires_ms")

    def insert(self, entity: str, seq: int, state: int, delivery_count: int, enqueued_ms: int,
               expires_ms: int | None, blob: bytes) -> None:
        self._begin().execute("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (entity, seq, state, delivery_count, enqueued_ms, expires_ms, blob))

    def update(self, entity: str, seq: int, state: int, delivery_count: int, enqueued_ms: int,
               expires_ms: int | None) -> None:
        self._begin().execute(
            "UPDATE messages SET state = ?, delivery_count = ?, enqueued_ms = ?, expires_ms = ? "
            "WHERE entity = ? AND seq = ?", (state, delivery_count, enqueued_ms, expires_ms, entity, seq))

    def delete(self, entity: str, seq: int) -> None:
        self._begin().execute("DELETE FROM messages WHERE entity = ? AND seq = ?", (entity, seq))

    def set_last_sequence(self, entity: str, seq: int) -> None:
        self._pending_seq[entity] = seq

    def remember_id(self, entity: str, message_id: str, expires_ms: int) -> None:
        self._begin().execute("INSERT OR REPLACE INTO dedup VALUES (?, ?, ?)", (entity, message_id, expires_ms))

    def forget_ids(self, entity: str, before_ms: int) -> None:
        self._begin().execute("DELETE FROM dedup WHERE entity = ? AND expires_ms <= ?", (entity, before_ms))

    def commit(self) -> None:
        if self._pending_seq:
            self._begin().executemany("INSERT OR REPLACE INTO sequences VALUES (?, ?)", self._pending_seq.items())
            self._pending_seq.clear()
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        self.commit()
        self._db.close()

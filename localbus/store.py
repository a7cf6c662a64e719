"""Where messages live between restarts: nowhere (memory only) or an SQLite file.

The broker keeps every message in memory and writes changes through to a :class:`Persistence`. Writes of one I/O
loop iteration share one transaction, committed before any acknowledgement leaves the server (group commit), so
an acknowledged send is on disk and a burst of sends costs one commit, not one per message. Locks are never
persisted: after a restart every locked message is simply available again.

Disk faults. A write that fails (disk full, read-only file system, I/O error, a failing fsync) is recorded as
:attr:`Persistence.failure` and raised as :class:`StorageError`; the transaction is rolled back, so the file holds
exactly what was committed before. The server then answers nobody from that iteration and reloads from the file
once a write succeeds again (see ``server.py``). Before it comes to that, :meth:`Persistence.space_problem` lets
the broker refuse new messages while the file system has less than ``min_free_bytes`` free, as RabbitMQ's disk
alarm does, so a filling disk shows up as a clear error to senders rather than as a failed commit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACTIVE, DEFERRED, SCHEDULED = 0, 1, 2
# Sends are refused while the data directory's file system has less free space than this (RabbitMQ's default
# disk_free_limit is 50 MB).
MIN_FREE_BYTES = 50 * 1024 * 1024
# After a write failed on a full disk, the store is tried again only once this much is free (or min_free_bytes,
# if more): a few free kilobytes would let the probe through and the next batch fail again.
RECOVERY_FREE_BYTES = 1024 * 1024


class StorageError(Exception):
    """The store cannot write. ``full``: because the disk is full (Service Bus's answer: quota exceeded); else an
    I/O problem such as a read-only file system or a failing fsync (Service Bus's answer: server busy)."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


def storage_error(exc: BaseException, path: Path) -> StorageError:
    """One line saying what went wrong with the store at ``path``, and whether it is a full disk."""
    full = (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT))
    reason = "the disk is full" if full else (str(exc) or type(exc).__name__)
    name = getattr(exc, "sqlite_errorname", None)  # SQLite's extended code says which call failed
    if not full and name and name != "SQLITE_ERROR":
        reason += f" ({name})"
    return StorageError(f"cannot write the message store {path}: {reason}", full)


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
    failure: StorageError | None = None  # a write failed; cleared once :meth:`recover` succeeds

    def space_problem(self) -> StorageError | None:
        """Why new messages should be refused right now (too little free disk space), or None."""
        return None

    def recover(self) -> bool:
        """After a failure: reopen the store and check that a write succeeds; True once it does."""
        return True

    def rows(self, entity: str | None = None, *, active: bool | None = None, from_seq: int = 0,
             limit: int | None = None) -> Iterator[StoredRow]:
        """Stored messages in (entity, sequence) order: of one entity or all, active ones only (``active=True``),
        the others only (``False``) or all, from a sequence number on, at most ``limit`` of them."""
        return iter(())

    def count_active(self, entity: str, from_seq: int = 0) -> int:
        return 0

    def entities(self) -> list[str]:
        """Entities with stored messages."""
        return []

    def last_sequences(self) -> dict[str, int]:
        return {}

    def dedup_entries(self) -> Iterator[tuple[str, str, int]]:
        return iter(())

    def session_states(self) -> Iterator[tuple[str, str, bytes]]:
        return iter(())

    def set_session_state(self, entity: str, session_id: str, state: bytes | None) -> None:
        pass

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
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, written_ms INTEGER NOT NULL);
-- Scheduled and deferred messages, which start-up loads whatever the queue's length (see Broker._load).
CREATE INDEX IF NOT EXISTS messages_held ON messages (entity, seq) WHERE state != 0;
CREATE TABLE IF NOT EXISTS session_state (
    entity TEXT NOT NULL, session_id TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (entity, session_id)
) WITHOUT ROWID;
"""


class SqlitePersistence(Persistence):
    """Write-through SQLite store (WAL). ``data_path`` is a directory (``localbus.sqlite3`` inside) or a file.

    Opening raises :class:`StorageError` (one line) when the file cannot be created or written."""

    durable = True

    def __init__(self, data_path: str | Path, synchronous: str = "FULL", min_free_bytes: int = MIN_FREE_BYTES
                 ) -> None:
        path = Path(data_path)
        self.path = path if path.suffix in (".db", ".sqlite", ".sqlite3") else path / "localbus.sqlite3"
        self.synchronous = synchronous
        self.min_free_bytes = min_free_bytes
        self._in_tx = False
        self._pending_seq: dict[str, int] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = self._open()
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, self.path) from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise self.failure or StorageError(f"the message store {self.path} is closed", False)
        return self._db

    def _begin(self) -> sqlite3.Connection:
        db = self._conn()
        if not self._in_tx:
            db.execute("BEGIN")
            self._in_tx = True
        return db

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        try:
            self._begin().execute(sql, params)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> StorageError:
        """Record a failed write. The whole batch is dropped (SQLite rolled it back, or we do): the caller must
        acknowledge nothing of it."""
        if self.failure is None:
            self.failure = storage_error(exc, self.path)
        self._in_tx = False
        self._pending_seq.clear()
        if self._db is not None and self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # recover() reopens the file anyway
                self._db.execute("ROLLBACK")
        return self.failure

    def space_problem(self) -> StorageError | None:
        """Asked before every transfer is taken: statvfs costs about a microsecond, and a cached answer would let
        a fast sender write far past the margin."""
        try:
            stat = os.statvfs(self.path.parent)
        except OSError as exc:
            return storage_error(exc, self.path)
        free = stat.f_bavail * stat.f_frsize
        if stat.f_flag & os.ST_RDONLY:
            return StorageError(f"cannot write the message store {self.path}: its file system is read-only", False)
        if free < self.min_free_bytes:
            return StorageError(
                f"the disk holding {self.path} has {free / 2**20:.1f} MiB free, less than the "
                f"{self.min_free_bytes / 2**20:.1f} MiB localbus keeps free: receive and complete messages or free "
                "disk space, and sends are accepted again", True)
        return None

    def recover(self) -> bool:
        if self.failure is None:
            return True
        if self.failure.full:
            try:
                stat = os.statvfs(self.path.parent)
            except OSError:
                return False
            if stat.f_bavail * stat.f_frsize < max(self.min_free_bytes, RECOVERY_FREE_BYTES):
                return False
        if self._db is not None:
            self._db.close()  # forget whatever this connection believes: the file is the truth
            self._db = None
        try:
            db = self._open()
        except (sqlite3.Error, OSError):
            return False
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO health VALUES (1, ?)", (int(time.time() * 1000),))
            db.execute("COMMIT")
        except (sqlite3.Error, OSError):
            db.close()
            return False
        self._db, self.failure = db, None
        return True

    def rows(self, entity: str | None = None, *, active: bool | None = None, from_seq: int = 0,
             limit: int | None = None) -> Iterator[StoredRow]:
        where, params = ["seq >= ?"], [from_seq]
        if entity is not None:
            where.append("entity = ?")
            params.append(entity)  # type: ignore[arg-type]
        if active is not None:
            where.append("state = 0" if active else "state != 0")
        sql = ("SELECT entity, seq, state, delivery_count, enqueued_ms, expires_ms, blob FROM messages WHERE "
               + " AND ".join(where) + " ORDER BY entity, seq" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        for row in self._conn().execute(sql, params):
            yield StoredRow(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]))

    def count_active(self, entity: str, from_seq: int = 0) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM messages WHERE entity = ? AND seq >= ? AND state = 0",
                                        (entity, from_seq)).fetchone()[0])

    def entities(self) -> list[str]:
        found: list[str] = []
        while True:  # one index step per entity, however many messages each has
            row = self._conn().execute("SELECT entity FROM messages WHERE entity > ? ORDER BY entity LIMIT 1",
                                       (found[-1] if found else "",)).fetchone()
            if row is None:
                return found
            found.append(row[0])

    def last_sequences(self) -> dict[str, int]:
        return {entity: seq for entity, seq in self._conn().execute("SELECT entity, last_seq FROM sequences")}

    def dedup_entries(self) -> Iterator[tuple[str, str, int]]:
        yield from self._conn().execute("SELECT entity, message_id, expires_ms FROM dedup ORDER BY expires_ms")

    def session_states(self) -> Iterator[tuple[str, str, bytes]]:
        for entity, session_id, state in self._conn().execute("SELECT entity, session_id, state FROM session_state"):
            yield entity, session_id, bytes(state)

    def set_session_state(self, entity: str, session_id: str, state: bytes | None) -> None:
        if state is None:
            self._write("DELETE FROM session_state WHERE entity = ? AND session_id = ?", (entity, session_id))
        else:
            self._write("INSERT OR REPLACE INTO session_state VALUES (?, ?, ?)", (entity, session_id, state))

    def insert(self, entity: str, seq: int, state: int, delivery_count: int, enqueued_ms: int,
               expires_ms: int | None, blob: bytes) -> None:
        self._write("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (entity, seq, state, delivery_count, enqueued_ms, expires_ms, blob))

    def update(self, entity: str, seq: int, state: int, delivery_count: int, enqueued_ms: int,
               expires_ms: int | None) -> None:
        self._write("UPDATE messages SET state = ?, delivery_count = ?, enqueued_ms = ?, expires_ms = ? "
                    "WHERE entity = ? AND seq = ?", (state, delivery_count, enqueued_ms, expires_ms, entity, seq))

    def delete(self, entity: str, seq: int) -> None:
        self._write("DELETE FROM messages WHERE entity = ? AND seq = ?", (entity, seq))

    def set_last_sequence(self, entity: str, seq: int) -> None:
        self._pending_seq[entity] = seq

    def remember_id(self, entity: str, message_id: str, expires_ms: int) -> None:
        self._write("INSERT OR REPLACE INTO dedup VALUES (?, ?, ?)", (entity, message_id, expires_ms))

    def forget_ids(self, entity: str, before_ms: int) -> None:
        self._write("DELETE FROM dedup WHERE entity = ? AND expires_ms <= ?", (entity, before_ms))

    def commit(self) -> None:
        """Make this batch durable; raises :class:`StorageError`, keeping nothing of the batch, if it cannot."""
        if self.failure is not None:
            raise self.failure
        try:
            if self._pending_seq:
                self._begin().executemany("INSERT OR REPLACE INTO sequences VALUES (?, ?)", self._pending_seq.items())
                self._pending_seq.clear()
            if self._in_tx:
                self._conn().execute("COMMIT")
                self._in_tx = False
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(exc) from None

    def close(self) -> None:
        if self._db is None:
            return
        try:
            if self.failure is None:
                self.commit()
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

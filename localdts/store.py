"""Where orchestration state lives: one SQLite file, checked before it is touched.

Each instance is one row (status, payloads, pending events, trace context, scheduled start) plus its history as
append-only rows, so a busy instance costs a few small inserts per episode rather than a rewrite. Only running
instances are loaded at start; ended ones are read when asked for, and queries page through indexes (by creation
time, by status and creation time, by completion time), so neither start-up nor a listing reads every instance.
Writes go through one connection (the backend's commit thread); reads through another, which sees only what
was committed (WAL). A file that is not ours (garbage, a foreign SQLite database, a newer schema) is refused with
:class:`DataFileError` and left exactly as it was; a file of schema 1 gets its indexes added once. An exclusive
``flock`` on a sibling ``.lock`` file keeps a second process off the same data.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .queries import RUNNING_STATUSES, CompletedQuery, InstanceQuery, PurgeFilter

log = logging.getLogger("localdts.store")

SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x4C445453  # "LDTS": marks the file as ours, so a foreign database is never mistaken for one
SCHEMA_VERSION = 2
DEFAULT_FILE_NAME = "dts.sqlite3"
FILE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

_SCHEMA = """
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, status INTEGER NOT NULL, version TEXT, input TEXT,
    output TEXT, custom_status TEXT, created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
    completed_us INTEGER, failure BLOB, tags TEXT, pending BLOB NOT NULL, trace BLOB, start_at_us INTEGER
) WITHOUT ROWID;
CREATE TABLE history (
    instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event BLOB NOT NULL, PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
# Schema 2: what start-up (running instances), listings (newest first, by status) and ListInstanceIds (by
# completion) read, so that none of them reads every instance.
_INDEXES = """
CREATE INDEX IF NOT EXISTS instances_by_created ON instances (created_us, instance_id);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances (status, created_us, instance_id);
CREATE INDEX IF NOT EXISTS instances_by_completed ON instances (completed_us, instance_id)
    WHERE completed_us IS NOT NULL;
"""
_COLUMNS = ("instance_id, name, status, version, input, output, custom_status, created_us, updated_us, "
            "completed_us, failure, tags, pending, trace, start_at_us")
# The same without the payloads (input, output): for listings that do not fetch them.
_LIGHT_COLUMNS = _COLUMNS.replace("input, output", "NULL, NULL")


class DataFileError(Exception):
    """The data file cannot be used (not ours, corrupt, newer, in use); the message is one line for a person."""


class WriteFailed(Exception):
    """A write did not reach the disk (full, read-only, failing fsync); nothing of it was committed. One line."""


# What SQLite's error names mean for someone looking at the disk (Python >= 3.11 gives the name).
_DISK_PROBLEMS = (
    ("SQLITE_FULL", "the disk is full"),
    ("SQLITE_IOERR_FSYNC", "fsync failed: the disk did not confirm the write"),
    ("SQLITE_IOERR_DIR_FSYNC", "fsync failed: the disk did not confirm the write"),
    ("SQLITE_READONLY", "the file or its directory is read-only"),
    ("SQLITE_CANTOPEN", "the file cannot be opened for writing (read-only directory, or permissions)"),
    ("SQLITE_PERM", "permission denied"),
    ("SQLITE_IOERR", "the disk refused the write (a read-only file system, or a failing disk)"),
)


def disk_problem(exc: sqlite3.Error, path: Path | None = None) -> str | None:
    """What is wrong with the disk, in a few words, if that is why ``exc`` happened (else None).

    SQLite reports some writes that failed for lack of space (growing its shared-memory index, say) as plain
    I/O errors, so an I/O error on a file system with no space left says so.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_IOERR") and "FSYNC" not in name and path is not None and _no_space(path):
        return f"the disk is full ({exc})"
    for prefix, meaning in _DISK_PROBLEMS:
        if name.startswith(prefix):
            return f"{meaning} ({exc})"
    return None


def _no_space(path: Path) -> bool:
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 1024


@dataclass
class InstanceRow:
    """One instance as stored; blobs are serialized protobuf messages (see ``localdts.backend``)."""

    instance_id: str
    name: str
    status: int
    version: str | None
    input: str | None
    output: str | None
    custom_status: str | None
    created_us: int
    updated_us: int
    completed_us: int | None
    failure: bytes | None
    tags: str | None
    pending: bytes
    trace: bytes | None
    start_at_us: int | None
    history: list[bytes] = field(default_factory=list)


@dataclass
class Change:
    """What one flush writes for one instance: its row and the history events from ``history_from`` on.

    ``row`` None deletes the instance. ``history_from`` 0 with ``rewrite`` replaces the whole history (after
    continue-as-new, a rewind or a re-created instance); otherwise the events are appended.
    """

    instance_id: str
    row: InstanceRow | None
    history_from: int = 0
    new_events: list[bytes] = field(default_factory=list)
    rewrite: bool = False


def resolve(data_path: Path) -> Path:
    """A directory gets ``dts.sqlite3`` inside; a path ending in .db/.sqlite/.sqlite3 is the file itself."""
    return data_path if data_path.suffix in FILE_SUFFIXES else data_path / DEFAULT_FILE_NAME


class Store:
    """The SQLite file, open for one backend run. ``fsync=False`` trades power-loss safety for speed.

    Commits are write-ahead-logged; with ``fsync`` each commit is fsynced before it returns (``synchronous=FULL``),
    without it the data survives a killed process but not a power cut (``synchronous=NORMAL``).
    """

    def __init__(self, data_path: Path, *, fsync: bool = True) -> None:
        self.path = resolve(Path(data_path))
        if self.path.is_dir():
            raise DataFileError(f"{self.path} is a directory, not a localdts data file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataFileError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from None
        self._lock_file = self._take_lock()
        try:
            self._db = self._open(fsync)
        except BaseException:
            self._release_lock()
            raise
        try:
            self.boot = self._next_boot()
            self._reader = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            self._db.close()
            self._release_lock()
            raise DataFileError(f"cannot write {self.path}: {disk_problem(exc, self.path) or exc}") from None
        self._read_lock = threading.Lock()

    # --- opening ---------------------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataFileError(f"cannot open {lock_path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataFileError(f"{self.path} is in use by another localdts process") from None
        return fd

    def _release_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)

    def _open(self, fsync: bool) -> sqlite3.Connection:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            self._check_header()
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DataFileError(f"cannot open {self.path}: {exc}") from None
        try:
            if fresh:
                self._create(db)
            elif self._check_schema(db) < SCHEMA_VERSION:
                self._upgrade(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        except sqlite3.DatabaseError as exc:
            db.close()
            problem = disk_problem(exc, self.path)
            if problem is not None:
                raise DataFileError(f"cannot write {self.path}: {problem}") from None
            raise DataFileError(f"{self.path} is not a usable localdts data file ({exc})") from None
        except DataFileError:
            db.close()
            raise
        return db

    def _check_header(self) -> None:
        try:
            with self.path.open("rb") as f:
                header = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise DataFileError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if header != SQLITE_MAGIC:
            raise DataFileError(f"{self.path} is not a localdts data file (not an SQLite database); "
                                "move it away or choose another --data")

    def _check_schema(self, db: sqlite3.Connection) -> int:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise DataFileError(f"{self.path} is an SQLite database of another program, not localdts data; "
                                "move it away or choose another --data")
        if version > SCHEMA_VERSION:
            raise DataFileError(f"{self.path} was written by a newer localdts (schema {version}; "
                                f"this one reads up to {SCHEMA_VERSION})")
        if version < 1:
            raise DataFileError(f"{self.path} has no localdts schema (version {version})")
        # Touch every table once (a row each, not a count: that would read millions): a damaged file fails here,
        # with a line, rather than later with a traceback.
        db.execute("SELECT * FROM instances LIMIT 1").fetchone()
        db.execute("SELECT * FROM history LIMIT 1").fetchone()
        return int(version)

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Schema 1 -> 2: add the indexes (once; on a large file this takes a while, so it is logged)."""
        log.warning("localdts: adding indexes to %s (schema 1 -> %d), once", self.path, SCHEMA_VERSION)
        db.execute("BEGIN IMMEDIATE")
        for statement in _INDEXES.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute("BEGIN")
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        for statement in (_SCHEMA + _INDEXES).split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    def _next_boot(self) -> int:
        """A counter bumped per open: completion tokens of an earlier run can never match this run's."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT value FROM meta WHERE key='boot'").fetchone()
        boot = (row[0] if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('boot', ?)", (boot,))
        db.execute("COMMIT")
        return int(boot)

    # --- reading ---------------------------------------------------------------------------------------------

    def load_running(self) -> Iterator[InstanceRow]:
        """Every instance that has not ended, with its history in order (what the backend keeps in memory)."""
        marks = ",".join("?" * len(RUNNING_STATUSES))
        try:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM instances WHERE status IN ({marks})",
                                    RUNNING_STATUSES).fetchall()
            for r in rows:
                yield _row(r, self._history(self._db, r[0]))
        except sqlite3.DatabaseError as exc:
            raise DataFileError(f"{self.path} is damaged ({exc})") from None

    @staticmethod
    def _history(db: sqlite3.Connection, instance_id: str) -> list[bytes]:
        return [bytes(e) for (e,) in db.execute("SELECT event FROM history WHERE instance_id=? ORDER BY seq",
                                                (instance_id,))]

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def row(self, instance_id: str, *, history: bool = False) -> InstanceRow | None:
        """One instance as last committed (with its history if asked), or None."""
        with self._read_lock:
            r = self._reader.execute(f"SELECT {_COLUMNS} FROM instances WHERE instance_id=?",
                                     (instance_id,)).fetchone()
            if r is None:
                return None
            return _row(r, self._history(self._reader, instance_id) if history else [])

    @contextlib.contextmanager
    def all_ids(self, page_size: int) -> Iterator[tuple[int, Iterator[list[str]]]]:
        """About how many instances there are, and the ids of every instance that exists throughout the walk, a
        page at a time, each page a read of its own (no snapshot held while the caller works on a page). On a
        connection of its own: the other readers do not wait for it."""
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA query_only=1")
            count = int(db.execute("SELECT count(*) FROM instances").fetchone()[0])

            def pages() -> Iterator[list[str]]:
                after: tuple[int, str] = (-(2**63), "")
                while rows := db.execute("SELECT created_us, instance_id FROM instances WHERE (created_us, "
                                         "instance_id) > (?, ?) ORDER BY created_us, instance_id LIMIT ?",
                                         (*after, page_size)).fetchall():  # a range of the index by creation
                    yield [str(i) for _, i in rows]
                    after = rows[-1]
            yield count, pages()
        finally:
            db.close()

    def history(self, instance_id: str) -> list[bytes]:
        with self._read_lock:
            return self._history(self._reader, instance_id)

    def query(self, q: InstanceQuery) -> list[InstanceRow]:
        """Up to ``q.page_size + 1`` instances matching ``q``, newest first, after its continuation point.

        One indexed range scan per asked status (merged here), or one on the creation-time index without a status
        filter: a page costs about its own size, however many instances there are.
        """
        columns = _COLUMNS if q.with_payloads else _LIGHT_COLUMNS
        where, params = q.sql_conditions()
        limit = q.page_size + 1
        order = " ORDER BY created_us DESC, instance_id DESC LIMIT ?"
        if not q.statuses:
            rows = self._read(f"SELECT {columns} FROM instances WHERE {where}{order}", [*params, limit])
        else:
            rows = []
            for status in q.statuses:
                rows += self._read(f"SELECT {columns} FROM instances WHERE status=? AND {where}{order}",
                                   [status, *params, limit])
            rows.sort(key=lambda r: (r[7], r[0]), reverse=True)
        return [_row(r, []) for r in rows[:limit]]

    def completed(self, q: CompletedQuery) -> list[tuple[int, str]]:
        """(completed_us, id) of up to ``q.page_size + 1`` ended instances, oldest completion first."""
        where, params = q.sql_conditions()
        rows = self._read(f"SELECT completed_us, instance_id FROM instances WHERE {where} "
                          "ORDER BY completed_us, instance_id LIMIT ?", [*params, q.page_size + 1])
        return [(int(c), str(i)) for c, i in rows]

    def purgeable(self, f: PurgeFilter, limit: int) -> list[str]:
        """Ids of up to ``limit`` ended instances matching ``f`` (to purge)."""
        where, params = f.sql_conditions()
        return [str(i) for (i,) in self._read(f"SELECT instance_id FROM instances WHERE {where} LIMIT ?",
                                              [*params, limit])]

    # --- writing ---------------------------------------------------------------------------------------------

    def write(self, changes: Iterable[Change]) -> None:
        """Apply the changes in one transaction; returns once committed (and fsynced, if so configured).

        Raises :class:`WriteFailed` when the disk refused (full, read-only, fsync failed): SQLite rolled the
        transaction back, so the file holds exactly what it held before, and the same changes can be written
        again later.
        """
        db = self._db
        if db.in_transaction:  # a rollback that failed last time
            db.execute("ROLLBACK")
        db.execute("BEGIN")
        try:
            for change in changes:
                self._apply(db, change)
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            problem = disk_problem(exc, self.path) if isinstance(exc, sqlite3.Error) else None
            if problem is not None:
                raise WriteFailed(f"cannot write {self.path}: {problem}") from exc
            raise

    def insert_many(self, rows: Iterable[InstanceRow]) -> None:
        """New instances with their histories, in one transaction (to fill a store quickly: the bench, tests)."""
        db = self._db
        db.execute("BEGIN")
        try:
            batch = list(rows)
            db.executemany(f"INSERT INTO instances ({_COLUMNS}) VALUES ({','.join('?' * 15)})",
                           [(r.instance_id, r.name, r.status, r.version, r.input, r.output, r.custom_status,
                             r.created_us, r.updated_us, r.completed_us, r.failure, r.tags, r.pending, r.trace,
                             r.start_at_us) for r in batch])
            db.executemany("INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
                           [(r.instance_id, seq, e) for r in batch for seq, e in enumerate(r.history)])
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _apply(db: sqlite3.Connection, change: Change) -> None:
        row = change.row
        if row is None:
            db.execute("DELETE FROM instances WHERE instance_id=?", (change.instance_id,))
            db.execute("DELETE FROM history WHERE instance_id=?", (change.instance_id,))
            return
        db.execute(
            "INSERT OR REPLACE INTO instances (instance_id, name, status, version, input, output, custom_status,"
            " created_us, updated_us, completed_us, failure, tags, pending, trace, start_at_us)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.instance_id, row.name, row.status, row.version, row.input, row.output, row.custom_status,
             row.created_us, row.updated_us, row.completed_us, row.failure, row.tags, row.pending, row.trace,
             row.start_at_us),
        )
        if change.rewrite:
            db.execute("DELETE FROM history WHERE instance_id=?", (change.instance_id,))
        if change.new_events:
            db.executemany(
                "INSERT OR REPLACE INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
                [(change.instance_id, change.history_from + i, blob) for i, blob in enumerate(change.new_events)],
            )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._reader.close()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._release_lock()


def _row(r: Sequence[Any], history: list[bytes]) -> InstanceRow:
    return InstanceRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
        bytes(r[10]) if r[10] is not None else None, r[11], bytes(r[12]),
        bytes(r[13]) if r[13] is not None else None, r[14], history,
    )

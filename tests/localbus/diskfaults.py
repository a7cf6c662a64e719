"""Real disk faults for tests: a small tmpfs (a disk that fills up, a read-only one) and ``faultyio.c``, an
LD_PRELOAD shim that makes fsync fail (EIO) or writes fail (EROFS) on demand in a ``python -m localbus`` child.

Mounting needs root: without it these tests skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SHIM_SOURCE = Path(__file__).with_name("faultyio.c")
MiB = 1024 * 1024


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def small_disk(where: Path, megabytes: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``where`` (a real file system: it fills up and answers ENOSPC)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={megabytes}m" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        _unavailable(f"cannot mount a small tmpfs for disk-fault tests (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a filler file until at most ``leave`` bytes are free (with 0, until the disk answers ENOSPC)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while (free := free_bytes(disk)) > leave:
            try:
                os.write(fd, b"\0" * max(4096, min(MiB, free - leave)))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def integrity(database: Path) -> str:
    """SQLite's own verdict on a store file (``ok`` when sound), read without writing to it."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))


def build_shim(out_dir: Path) -> Path:
    """Compile ``faultyio.c`` into a shared library for LD_PRELOAD."""
    library = out_dir / "faultyio.so"
    built = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        _unavailable(f"cannot build the fault shim with gcc: {built.stderr.strip()[:200]}")
    return library

"""The campaign's history: one JSON object per line, appended as things happen, flushed at once.

Every record has `k` (its kind) and `t` (wall-clock seconds, comparable with the times DTS records). Kinds:
`campaign` (settings), `schedule`, `fault` (begin/end of each), `send` (each publish attempt; the first carries
the message), `ack` / `nack` (the broker accepted it / the attempt failed, so it may or may not be stored),
`seen` (an instance observed finished during the run), `skip` (a late decision never published), and at the end
what was observed where it lives: `instance` (DTS state and history summary), `dead` (each dead letter), `left`
(each message still in the queue), `end`.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, TextIO


class History:
    """Thread-safe appender (the publisher, the fault player and the observer all write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = path.open("w", encoding="utf-8")

    def write(self, k: str, /, **fields: Any) -> dict[str, Any]:
        record = {"k": k, "t": round(time.time(), 3), **fields}
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
        return record

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(path: Path) -> list[dict[str, Any]]:
    """Every record; a torn last line (the campaign was killed mid-write) is skipped."""
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out

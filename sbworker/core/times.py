"""The one way a moment is shown to people, everywhere (pages, the command line, logs, JSON output).

ISO-8601 in UTC with a `Z`, to the millisecond: `2026-12-06T04:13:18.132Z`. One form means a time copied from the
dashboard can be searched for in a log line or compared with `sbworker status` as text; milliseconds because the
histories of fast workflows differ in milliseconds. A moment without a zone is UTC (what the SDKs hand back).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(moment: datetime | None) -> str:
    """`moment` as `YYYY-MM-DDTHH:MM:SS.mmmZ`; "" for None."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def utc_from_timestamp(seconds: float) -> str:
    """A POSIX timestamp (a log record's `created`) in the same form."""
    return utc_text(datetime.fromtimestamp(seconds, UTC))


def span_text(seconds: float) -> str:
    """A length of time in one family of units, largest two at most: `350 ms`, `12.5 s`, `2 min 5 s`, `1 h 30 min`,
    `2 d 3 h`. Timeline ticks and bar lengths use it alike, so an axis never mixes `60 s` with `0:02:00`."""
    value = max(float(seconds), 0.0)
    if value == 0:
        return "0 s"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.3g} s" if value < 10 else f"{value:.0f} s"
    whole = round(value)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= size:
            big, rest = divmod(whole, size)
            part = rest // small_size
            return f"{big} {unit} {part} {smaller}" if part else f"{big} {unit}"
    return f"{whole} s"

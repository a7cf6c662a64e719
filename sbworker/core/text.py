"""Text that others chose (subjects, ids, reasons, SDK messages), cut to a size we choose: one rule everywhere.

Publishers pick subjects and ids, and a 200 KB subject must not become a 200 KB log line, span attribute or
dead-letter description.
"""

from __future__ import annotations


def clip(value: object, limit: int, *, count: bool = False) -> str:
    """`value` as text (bytes read as UTF-8), at most `limit` characters: a longer one is cut and ends in "…",
    or with `count` in "…(+N)", N being how many characters were cut."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    if len(text) <= limit:
        return text
    suffix = "…"
    while True:  # the count's own width decides how much is kept, which decides the count: settles in two rounds
        kept = max(0, limit - len(suffix))
        wanted = f"…(+{len(text) - kept})" if count else "…"
        if wanted == suffix:
            return text[:kept] + suffix
        suffix = wanted

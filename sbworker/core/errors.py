"""Errors: ours for mistakes a user can fix (every `sbworker` command shows them as one line, exit 2), and the
one way we put anybody's error into a log line, a dead-letter description or a page: `one_line`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from sbworker.core.codes import Exit

if TYPE_CHECKING:
    import grpc


class UserError(Exception):
    """Bad configuration or arguments: `str()` is the whole message, and nothing was done."""

    exit_code = Exit.USAGE


class ConfigError(UserError):
    """A setting (an environment variable, or a command-line option) is missing or malformed."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable}: {problem}")
        self.variable = variable
        self.problem = problem


class UsageError(UserError):
    """Arguments that parse but make no sense (bad JSON input, a time without a zone, an unknown name)."""


def rpc_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status an error carries (the DTS SDK's errors), or None."""
    code = getattr(error, "code", None)
    # Only an error of a loaded grpc carries its StatusCode: not importing it here spares the commands that never
    # load it (`publish`, a configuration error) its 45 ms.
    loaded = sys.modules.get("grpc")
    if callable(code) and loaded is not None:
        try:
            value = code()
        except Exception:  # a broken error object is simply not an RPC error
            return None
        return value if isinstance(value, loaded.StatusCode) else None
    return None


def one_line(error: BaseException, limit: int = 300) -> str:
    """`Type: first line`, or `STATUS: first line of the details` for a gRPC error; never a traceback."""
    code = rpc_code(error)
    if code is not None:
        details = getattr(error, "details", None)
        text = (details() if callable(details) else "") or ""
        name = code.name
    else:
        text, name = str(error), type(error).__name__
    first = text.splitlines()[0] if text else ""
    return f"{name}: {first}"[:limit]

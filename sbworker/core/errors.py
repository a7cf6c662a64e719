"""The one error hierarchy for mistakes a user can fix: every `sbworker` command shows them as one line, exit 2."""

from __future__ import annotations

from sbworker.core.codes import Exit


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

"""Logging for the whole process: our lines at the configured level, the SDKs' chatter only when it matters."""

from __future__ import annotations

import logging
import sys

# These SDKs log every call at INFO (durabletask) or every link event (azure, proton); normal runs stay quiet.
NOISY_LOGGERS = ("durabletask", "azure", "proton", "grpc", "urllib3", "msal")

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str = "INFO") -> None:
    """Install one stderr handler on the root logger; SDK loggers at WARNING unless we run at DEBUG."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sbworker", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler._sbworker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    sdk_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(sdk_level)


def sdk_logger(component: str) -> logging.Logger:
    """The logger handed to durabletask clients/workers, so their output goes through our configuration."""
    return logging.getLogger(f"durabletask.{component}")

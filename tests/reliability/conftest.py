"""The `soak` marker: long reliability runs, skipped unless SOAK=1 (`SOAK=1 make test`)."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long reliability run; skipped unless SOAK=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: run with SOAK=1")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)

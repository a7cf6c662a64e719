"""Every test here is `slow` (run by `make test-slow` and CI); `soak` ones also need SOAK=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak_skip = None if os.environ.get("SOAK") == "1" else pytest.mark.skip(reason="soak test: run with SOAK=1")
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.slow)
        if soak_skip is not None and "soak" in item.keywords:
            item.add_marker(soak_skip)

"""A localdts backend per test module (memory only): it keeps trace context, so the worker's spans join the trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localdts import LocalDts


@pytest.fixture(scope="module")
def dts() -> Iterator[LocalDts]:
    backend = LocalDts(port=0).start()
    yield backend
    backend.stop(grace=0)

"""The core's small shared helpers: one each for loopback, one-line errors and truncation."""

from __future__ import annotations

import pytest

from sbworker.core.net import is_loopback


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.1", "::1", "[::1]", "dev.localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", ""])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)

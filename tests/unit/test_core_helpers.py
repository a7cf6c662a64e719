"""The core's small shared helpers: one each for loopback, one-line errors and truncation."""

from __future__ import annotations

import grpc
import pytest

from sbworker.core.errors import one_line, rpc_code
from sbworker.core.net import is_loopback


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.1", "::1", "[::1]", "dev.localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", ""])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)


class FakeRpcError(Exception):
    """What grpc raises: code() and details() (the shape `rpc_code` reads)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection refused\nsecond line"


def test_one_line_names_the_type_and_keeps_the_first_line() -> None:
    assert one_line(ValueError("bad\nworse")) == "ValueError: bad"
    assert one_line(RuntimeError()) == "RuntimeError: "
    assert len(one_line(ValueError("x" * 1000), 50)) == 50


def test_one_line_of_a_grpc_error_is_its_status_and_details() -> None:
    assert rpc_code(FakeRpcError()) is grpc.StatusCode.UNAVAILABLE
    assert one_line(FakeRpcError()) == "UNAVAILABLE: connection refused"
    assert rpc_code(ValueError()) is None

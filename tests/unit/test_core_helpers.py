"""The core's small shared helpers: one each for loopback, one-line errors and truncation."""

from __future__ import annotations

import grpc
import pytest

from sbworker.core.errors import one_line, rpc_code
from sbworker.core.net import is_loopback
from sbworker.core.text import clip


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


def test_clip_keeps_short_text_and_cuts_long_text_to_the_limit() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 10, 10) == "x" * 10
    assert clip("x" * 11, 10) == "x" * 9 + "…"
    assert clip(b"caf\xc3\xa9", 10) == "café"
    assert clip(None, 10) == "None"


def test_clip_with_count_says_how_much_was_cut_and_still_fits() -> None:
    for size in (11, 99, 100, 101, 1_000, 123_456):
        cut = clip("y" * size, 10, count=True)
        assert len(cut) == 10, cut
        kept = cut.index("…")
        assert cut == "y" * kept + f"…(+{size - kept})"


def test_terminal_statuses_are_the_durabletask_sdks_own_members() -> None:
    """Built on first import (sbworker.core.codes loads the SDK only then), and what its five users test with `in`."""
    from durabletask.client import OrchestrationStatus

    from sbworker.core import codes
    from sbworker.core.codes import TERMINAL_STATUSES

    ended = {OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED}
    assert ended == TERMINAL_STATUSES and isinstance(TERMINAL_STATUSES, frozenset)
    assert codes.TERMINAL_STATUSES is TERMINAL_STATUSES  # built once
    assert all((status in TERMINAL_STATUSES) == (status in ended) for status in OrchestrationStatus)
    with pytest.raises(AttributeError, match="no attribute 'NOT_A_NAME'"):
        codes.NOT_A_NAME  # noqa: B018

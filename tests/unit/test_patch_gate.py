"""sbworker.patches' one gate: what the start-up line says, for each SDK, when its patches are all in force, when
none is (an unverified version) and when some are not (the SDK lost what one of them changes)."""

from __future__ import annotations

import logging

import pytest

from sbworker import patches
from sbworker.patches import dts_query


def test_every_patch_belongs_to_one_sdk_of_the_gate() -> None:
    assert patches.expected() == [name for sdk in patches.VERIFIED for name in patches.expected(sdk)]
    assert dts_query.QUERY_PAGE in patches.expected(patches.DURABLETASK)
    assert not patches.verified(patches.DURABLETASK, "1.13.0") and not patches.verified(patches.SERVICEBUS, "7.16.0")


def test_all_in_force_is_one_info_line_naming_each_sdk(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=patches.__name__):
        patches.log_state()
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert all(f"{sdk} {patches.sdk_version(sdk)}: " in record.getMessage() for sdk in patches.VERIFIED)
    assert dts_query.QUERY_PAGE in record.getMessage()


def test_an_sdk_without_its_patches_is_a_warning_saying_what_it_loses(caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patches, "_installed", {patches.SERVICEBUS: patches.expected(patches.SERVICEBUS),
                                                patches.DURABLETASK: []})
    with caplog.at_level(logging.INFO, logger=patches.__name__):
        patches.log_state()
    by_level = {r.levelno: r.getMessage() for r in caplog.records}
    assert "durabletask" in by_level[logging.WARNING] and "instead of one page" in by_level[logging.WARNING]
    assert by_level[logging.INFO].startswith(f"{patches.SERVICEBUS} ")


def test_one_patch_lost_is_named(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patches, "_installed", {sdk: [n for n in patches.expected(sdk) if n != patches.SETTLED]
                                                for sdk in patches.VERIFIED})
    with caplog.at_level(logging.INFO, logger=patches.__name__):
        patches.log_state()
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.endswith(f"NOT active (the SDK no longer has what they change): {patches.SETTLED}")

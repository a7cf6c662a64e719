"""bench.side_by_side: which directories it accepts as versions to compare."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import side_by_side
from bench.stack import REPO_ROOT


def test_a_version_is_a_name_and_a_checkout_of_this_repository(tmp_path: Path) -> None:
    assert side_by_side.version(f"main={REPO_ROOT}") == side_by_side.Version("main", REPO_ROOT)
    for text in (f"{REPO_ROOT}", f"=={REPO_ROOT}", f"x={tmp_path}"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=DIR"):
            side_by_side.version(text)


def test_one_version_alone_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        side_by_side.main([f"main={REPO_ROOT}"])
    assert exit_.value.code == 2 and "at least two versions" in capsys.readouterr().err

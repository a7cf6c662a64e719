"""bench.concurrency: which values it accepts to compare (the rounds themselves are what `make bench` rows run)."""

from __future__ import annotations

import pytest

from bench import concurrency


def test_two_or_more_positive_values_are_compared() -> None:
    assert concurrency._values("64,128") == [64, 128]
    assert concurrency._values("32, 64,128") == [32, 64, 128]


@pytest.mark.parametrize("text", ["64", "64,0", "", "64,-1"])
def test_fewer_than_two_or_a_non_positive_value_is_one_line_and_exit_2(text: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        concurrency.main(["--values", text])
    assert exit_.value.code == 2 and "two or more positive integers" in capsys.readouterr().err

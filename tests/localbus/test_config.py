"""Config.json reading: durations, queue properties, unknown keys, malformed files."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from localbus.cli import main as cli_main
from localbus.config import ConfigError, QueueSettings, load_config, parse_duration, queue_settings
from tests.fixtures.localbus import REPO_CONFIG


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT1M", 60.0), ("PT0.5S", 0.5), ("PT2S", 2.0), ("P1D", 86400.0), ("PT1H30M", 5400.0), ("P14DT1S", 1209601.0),
     (3, 3.0), ("pt1.25s", 1.25)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "1M", "PT1X", "PT-1S", "00:01:00", True])
def test_parse_duration_rejects_garbage(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)  # type: ignore[arg-type]


def test_repo_config_defines_the_queues_of_both_forms_alike_with_and_without_sessions() -> None:
    queues = load_config(REPO_CONFIG)
    expected = QueueSettings(
        lock_duration=60.0, max_delivery_count=10, default_message_ttl=3600.0,
        dead_lettering_on_message_expiration=True, requires_duplicate_detection=False,
        duplicate_detection_window=20.0,
    )
    sessions = replace(expected, requires_session=True)
    assert queues == {"workflow-requests": expected, "workflow-events-sbworker-retry": expected,
                      "workflow-requests-sessions": sessions, "workflow-events-sbworker-sessions-retry": sessions}


def test_unknown_keys_warn_but_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = {"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [
        {"Name": "q", "Properties": {"LockDuration": "PT5S", "Shiny": 1}, "Extra": True}]}], "Future": {}}}
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="localbus.config"):
        queues = load_config(path)
    assert queues["q"].lock_duration == 5.0
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "Shiny" in warnings and "Extra" in warnings and "Future" in warnings


@pytest.mark.parametrize(
    ("content", "needle"),
    [("{not json", "invalid JSON"),
     ('{"UserConfig": {"Namespaces": [{"Queues": [{"Name": ""}]}]}}', "Name"),
     ('{"UserConfig": {"Namespaces": [{"Queues": [{"Name": "q", "Properties": {"LockDuration": "soon"}}]}]}}',
      "duration"),
     ('{"UserConfig": {"Namespaces": [{"Queues": [{"Name": "q", "Properties": {"MaxDeliveryCount": 0}}]}]}}',
      "MaxDeliveryCount"),
     ("[]", "UserConfig")],
)
def test_malformed_config_is_one_clear_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "Config.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_exits_2_on_malformed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Config.json"
    path.write_text("{broken")
    assert cli_main(["--config", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbworker localbus: error:") and "invalid JSON" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_exits_2_on_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--config", str(tmp_path / "nope.json"), "--port", "0"]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_queue_settings_accept_sub_second_fractional_locks() -> None:
    settings = queue_settings({"LockDuration": "PT0.25S", "MaxDeliveryCount": 2, "RequiresDuplicateDetection": True})
    assert settings.lock_duration == 0.25
    assert settings.max_delivery_count == 2
    assert settings.requires_duplicate_detection is True

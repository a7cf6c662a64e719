"""The registry is the contract between messages and code: names, and nothing but those names, are startable."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrations import registry


def test_public_names() -> None:
    assert registry.orchestration_names() == [
        "approval_workflow", "fan_out_fan_in", "hello_cities", "invoice_payment", "workflow_with_retry",
    ]
    assert set(registry.ACTIVITIES) == {
        "say_hello", "send_approval_request", "unreliable_service", "compensation_activity", "issue_receipt",
    }


@pytest.mark.parametrize("name", ["say_hello", "register", "_check_registered", "", "HELLO_CITIES", "os.system"])
def test_only_registered_orchestrations_are_startable(name: str) -> None:
    assert not registry.is_startable(name)


class RecordingWorker:
    def __init__(self) -> None:
        self.orchestrators: list[str] = []
        self.activities: list[str] = []

    def add_orchestrator(self, fn: Any) -> str:
        self.orchestrators.append(fn.__name__)
        return str(fn.__name__)

    def add_activity(self, fn: Any) -> str:
        self.activities.append(fn.__name__)
        return str(fn.__name__)


def test_register_adds_everything_under_its_public_name() -> None:
    worker = RecordingWorker()
    registry.register(worker)
    assert sorted(worker.orchestrators) == registry.orchestration_names()
    assert sorted(worker.activities) == sorted(registry.ACTIVITIES)


def test_register_refuses_a_key_that_differs_from_the_function_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "ORCHESTRATORS", {"renamed": registry.ORCHESTRATORS["hello_cities"]})
    with pytest.raises(RuntimeError, match="'renamed' registers as 'hello_cities'"):
        registry.register(RecordingWorker())

"""The SDK internals localdts builds on (issue 30, item 3): a version gate, and proof that every override is called.

DurableBackend overrides private hooks of durabletask's in-memory backend. If a release stopped calling one,
nothing would fail loudly: the override would just stop having its effect. The spy below counts, over one real
run (start, activity, timer, sub-orchestration, completion), the calls the SDK makes into each override.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Generator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from durabletask import task
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationStatus
from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend

from localdts import sdkcheck
from localdts.backend import DurableBackend
from localdts.store import Store
from tests.localdts import support


def double(ctx: task.ActivityContext, n: int) -> int:
    return 2 * n


def little(ctx: task.OrchestrationContext, n: int) -> int:
    return n + 1


def every_hook(ctx: task.OrchestrationContext, n: int) -> Generator[task.Task[Any], Any, Any]:
    doubled = yield ctx.call_activity(double, input=n)
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(milliseconds=100))
    more = yield ctx.call_sub_orchestrator(little, input=doubled)
    return more


class Spy(DurableBackend):
    """DurableBackend counting the calls that reach each of its overrides."""

    calls: Counter[str] = Counter()


def _counting(name: str) -> Any:
    def hook(self: Spy, *args: Any, **kwargs: Any) -> Any:
        Spy.calls[name] += 1
        return getattr(DurableBackend, name)(self, *args, **kwargs)
    return hook


for _name in sdkcheck.OVERRIDDEN:
    setattr(Spy, _name, _counting(_name))


def test_the_sdk_calls_every_override(tmp_path: Path) -> None:
    Spy.calls.clear()
    store = Store(tmp_path / "data")
    backend = Spy(port=0, store=store)
    endpoint = f"http://localhost:{backend.start().split(':')[1]}"
    worker = DurableTaskSchedulerWorker(host_address=endpoint, taskhub=support.TASKHUB, token_credential=None,
                                        secure_channel=False)
    worker.add_orchestrator(every_hook)
    worker.add_orchestrator(little)
    worker.add_activity(double)
    worker.start()
    client = support.new_client(backend.port)
    try:
        iid = client.schedule_new_orchestration(every_hook, input=20)
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED
        assert state.serialized_output == "41"
    finally:
        client.close()
        worker.stop()
        backend.stop(0)
        store.close()
    never = [name for name in sdkcheck.OVERRIDDEN if Spy.calls[name] == 0]
    assert not never, f"the SDK no longer calls {never}: those overrides have no effect"


def test_the_installed_sdk_is_a_verified_one() -> None:
    """Fails on an upgrade on purpose: read the SDK backend again, then add the version to VERIFIED_VERSIONS."""
    assert sdkcheck.verified(), (f"durabletask {sdkcheck.sdk_version()} is not in {sdkcheck.VERIFIED_VERSIONS}; "
                                 "check DurableBackend's overrides against it")
    assert not sdkcheck.problems(InMemoryOrchestrationBackend, InMemoryOrchestrationBackend())


def test_an_unverified_version_warns_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sdkcheck, "sdk_version", lambda: "1.99.0")
    monkeypatch.setattr(sdkcheck, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="localdts.sdkcheck"):
        sdkcheck.check(InMemoryOrchestrationBackend)
        sdkcheck.check(InMemoryOrchestrationBackend)
    [record] = caplog.records
    assert "durabletask 1.99.0 is not a version localdts was verified with (1.12.x)" in record.getMessage()


class _Renamed(InMemoryOrchestrationBackend):
    """What a release that renamed a hook and changed another's parameters would look like."""

    _enqueue_orchestration = None  # type: ignore[assignment]

    def _notify_waiters(self, instance_id: str, reason: str = "") -> None:
        pass


def test_a_changed_sdk_is_refused_in_one_line() -> None:
    with pytest.raises(sdkcheck.SdkChanged) as caught:
        sdkcheck.check(_Renamed)
    message = str(caught.value)
    assert "\n" not in message
    assert "_enqueue_orchestration is gone" in message
    assert "_notify_waiters('self', 'instance_id', 'reason')" in message

"""Activities are plain functions: test them without any worker."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from activities import approvals, services
from activities.greetings import say_hello


def ctx(instance_id: str = "i-1") -> SimpleNamespace:
    return SimpleNamespace(orchestration_id=instance_id, task_id=1)


def test_say_hello() -> None:
    assert say_hello(ctx(), "Tokyo") == "Hello Tokyo!"


def test_send_approval_request_records_the_request() -> None:
    iid = uuid.uuid4().hex
    record = approvals.send_approval_request(ctx(iid), {"item": "laptop"})
    assert record == {"instance_id": iid, "request": {"item": "laptop"}}
    assert approvals.OUTBOX.sent_for(iid) == [{"item": "laptop"}]


def test_unreliable_service_fails_exactly_n_times_per_key() -> None:
    key = uuid.uuid4().hex
    for attempt in (1, 2):
        with pytest.raises(services.ServiceUnavailableError, match=f"attempt {attempt}"):
            services.unreliable_service(ctx(), {"key": key, "fail_times": 2})
    assert services.unreliable_service(ctx(), {"key": key, "fail_times": 2}) == "Service succeeded after 3 attempt(s)"
    assert services.attempts(key) == 3


def test_unreliable_service_always_fail_and_custom_result() -> None:
    key = uuid.uuid4().hex
    for _ in range(5):
        with pytest.raises(services.ServiceUnavailableError):
            services.unreliable_service(ctx(), {"key": key, "always_fail": True})
    assert services.unreliable_service(ctx(), {"key": uuid.uuid4().hex, "result": {"ok": 1}}) == {"ok": 1}


def test_unreliable_service_keys_by_instance_when_no_key() -> None:
    iid = uuid.uuid4().hex
    assert services.unreliable_service(ctx(iid), None) == "Service succeeded after 1 attempt(s)"
    assert services.attempts(iid) == 1


def test_compensation_names_the_instance() -> None:
    assert services.compensation_activity(ctx("abc"), {}) == "Compensated abc"


def test_unreliable_service_keeps_a_bounded_number_of_keys() -> None:
    """A long-running worker must not grow forever: one counter per instance ever seen was a leak."""
    for _ in range(services.MAX_TRACKED_KEYS + 500):
        services.unreliable_service(ctx(uuid.uuid4().hex), {})
    assert len(services._attempts) == services.MAX_TRACKED_KEYS
    recent = uuid.uuid4().hex
    services.unreliable_service(ctx(recent), {})
    services.unreliable_service(ctx(recent), {})
    assert services.attempts(recent) == 2  # the newest keys are the ones kept

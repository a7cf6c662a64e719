"""Interop proof with a second, independent client stack: the official JavaScript SDK (@azure/service-bus, on rhea).

Each test starts a LocalBus on a free port, runs one scenario of ``scenarios.mjs`` with node against it, and
asserts on the JSON it prints. ``npm ci`` runs once (cached in ``tests/interop/node_modules``). Without node or
npm the tests skip locally, and fail in CI (``CI`` set), where a missing client stack must not pass silently.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localbus import LocalBus
from tests.fixtures.node import node_with_packages

HERE = Path(__file__).resolve().parent
Q = "interop"
LIMITED = "interop-limited"
SESSIONS = "interop-sessions"
SHORT_SESSIONS = "interop-sessions-short"
QUEUES: dict[str, Any] = {Q: {"LockDuration": "PT30S"}, LIMITED: {"MaxDeliveryCount": 3},
                          SESSIONS: {"RequiresSession": True, "LockDuration": "PT30S"},
                          SHORT_SESSIONS: {"RequiresSession": True, "LockDuration": "PT1S"}}
TOPICS: dict[str, Any] = {"orders": {"Subscriptions": [
    {"Name": "all"},
    {"Name": "red", "Rules": [{"Name": "red-only", "Properties": {
        "FilterType": "Correlation", "CorrelationFilter": {"Properties": {"color": "red"}}}}]},
    {"Name": "big-orders", "Rules": [{"Name": "big", "Properties": {
        "FilterType": "Sql", "SqlFilter": {"SqlExpression": "size > 10 AND sys.Label = 'order'"}}}]},
    {"Name": "none", "Rules": [{"Name": "never", "Properties": {
        "FilterType": "Sql", "SqlFilter": {"SqlExpression": "1=0"}}}]},
]}}


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with @azure/service-bus installed from package-lock.json (npm ci, once)."""
    return node_with_packages(HERE, "the JavaScript interop tests")


@pytest.fixture
def bus() -> Any:
    with LocalBus(port=0, config_path=None, queues=QUEUES, topics=TOPICS) as running:
        yield running


def run(node: str, bus: LocalBus, scenario: str, **options: Any) -> dict[str, Any]:
    result = subprocess.run([node, str(HERE / "scenarios.mjs"), scenario, bus.connection_string,
                             json.dumps(options)], cwd=HERE, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, f"{scenario} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


def test_js_settlement_abandon_counts_and_applies_properties_defer_and_dead_letter(node: str, bus: LocalBus) -> None:
    out = run(node, bus, "settle", queue=Q)
    assert [m["deliveryCount"] for m in out["first"]] == [0, 0, 0, 0]
    assert {m["state"] for m in out["first"]} == {"active"}
    abandoned = out["abandoned"]
    assert abandoned["body"] == "abandon" and abandoned["deliveryCount"] == 1  # modified without delivery-failed
    assert abandoned["applicationProperties"] == {"attempt": "first", "n": 7}  # propertiesToModify
    deferred = out["deferred"]
    assert deferred["state"] == "deferred" and deferred["deliveryCount"] == 1
    dead = out["deadLettered"]
    assert (dead["deadLetterReason"], dead["deadLetterErrorDescription"]) == ("Bad", "why")
    assert dead["deadLetterSource"] is None  # set only on auto-forwarded dead letters
    assert bus.counts(Q)["total"] == 0 and bus.counts(f"{Q}/$DeadLetterQueue")["total"] == 0


def test_js_consumer_that_always_abandons_reaches_max_delivery_count(node: str, bus: LocalBus) -> None:
    out = run(node, bus, "abandonLoop", queue=LIMITED, maxDeliveryCount=3)
    assert out["deliveryCounts"] == [0, 1, 2]
    assert [m["deadLetterReason"] for m in out["deadLettered"]] == ["MaxDeliveryCountExceeded"]


def test_js_management_operations_as_a_connections_first_use(node: str, bus: LocalBus) -> None:
    out = run(node, bus, "managementFirst", queue=Q)
    assert out["peekEmpty"] == 0
    assert out["schedule"] == [1, 2]
    assert [(m["body"], m["state"]) for m in out["peekScheduled"]] == [("later", "scheduled"), ("later2", "scheduled")]
    assert out["cancel"] == ["later2"]
    assert out["defer"] == 3
    [received] = out["receiveDeferred"]
    assert (received["body"], received["state"], received["deliveryCount"]) == ("deferred", "deferred", 1)
    assert [m["body"] for m in out["peekDeferredGone"]] == ["later2"]
    assert any(aud.endswith(f"/{Q}/$management") for _, aud in bus.tokens)  # the audience this SDK authorises


def test_js_topic_fans_out_by_correlation_and_sql_filters(node: str, bus: LocalBus) -> None:
    messages = [
        {"body": "a", "applicationProperties": {"color": "red", "size": 20}, "subject": "order"},
        {"body": "b", "applicationProperties": {"color": "blue", "size": 20}, "subject": "order"},
        {"body": "c", "applicationProperties": {"color": "red", "size": 2}},
        {"body": "d"},
    ]
    out = run(node, bus, "topics", topic="orders", subscriptions=["all", "red", "big-orders", "none"],
              messages=messages)
    assert out["received"] == {"all": ["a", "b", "c", "d"], "red": ["a", "c"], "big-orders": ["a", "b"], "none": []}
    assert "sending to a subscription is not allowed" in out["sendToSubscription"]["error"]["message"]


def test_js_sessions_named_and_next_available_in_order_with_state_renewal_and_dead_letters(
        node: str, bus: LocalBus) -> None:
    out = run(node, bus, "sessions", queue=SESSIONS)
    assert "The SessionId was not set on a message" in out["sendWithoutSession"]["error"]["message"]
    named = out["named"]
    assert (named["sessionId"], named["bodies"], named["sessionIds"]) == ("s1", ["s1-1", "s1-2", "s1-3"], ["s1"] * 3)
    assert named["lockedUntil"] is not None and named["renewed"] is True
    assert named["state"] == "checkpoint-1"
    assert out["second"]["error"]["code"] == "SessionCannotBeLocked"
    assert out["next"]["sessionId"] == "s2"
    assert out["next"]["afterAbandon"] == [["s2-1", 1], ["s2-2", 0], ["s2-3", 0]]  # abandoned: first again
    [dead] = out["deadLettered"]
    assert (dead["body"], dead["sessionId"], dead["deadLetterReason"]) == ("s2-1", "s2", "Bad")
    assert out["nextWhenEmpty"]["error"]["code"] == "ServiceTimeout"  # none to give within the client's wait
    assert bus.counts(SESSIONS)["total"] == 0
    state = bus.call(lambda b: b.entity(SESSIONS).sessions["s1"].state)
    assert state is not None and b"checkpoint-1" in state  # what the JavaScript SDK stored, as bytes


def test_js_session_lock_expiry_loses_the_lock_and_counts_a_delivery(node: str, bus: LocalBus) -> None:
    out = run(node, bus, "sessionLockExpiry", queue=SHORT_SESSIONS)
    assert out["lateComplete"]["error"]["code"] == "SessionLockLost"
    assert out["again"] == ["slow", 1]


def test_js_sending_to_a_dead_letter_queue_is_refused(node: str, bus: LocalBus) -> None:
    out = run(node, bus, "sendToDeadLetterQueue", queue=Q)
    assert "dead-letter queue is not allowed" in out["error"]["message"]
    assert bus.counts(f"{Q}/$DeadLetterQueue")["total"] == 0

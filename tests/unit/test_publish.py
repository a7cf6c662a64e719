"""Building contract messages (what Publisher, `sbworker publish` and the dashboard send): each one, plain or as a
CloudEvent in either mode, is read back by the listener's parser before it may be sent, and what the listener
would dead-letter is refused with the same reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sbworker.core import contract
from sbworker.core.contract import ApprovalRequest, EventRequest, Rejected, StartRequest
from sbworker.core.limits import Limits
from sbworker.core.messages import text
from sbworker.operations.publish import DEFAULT_SOURCE, Messages, verify

PAYMENT = {"amount_cents": 4500, "currency": "EUR", "reference": "psp-1"}


def body_of(outgoing: Any) -> bytes:
    return b"".join(outgoing.message.body)


def reread(outgoing: Any) -> Any:
    """The listener's reading of exactly what would be sent."""
    message = outgoing.message
    return verify(body_of(outgoing), subject=text(message.subject), content_type=text(message.content_type),
                  message_id=str(message.message_id), properties=message.application_properties)


@pytest.mark.parametrize("mode", [None, "structured", "binary"])
def test_every_kind_in_every_form_is_what_the_listener_reads(mode: Any) -> None:
    messages = Messages(cloudevents=mode)
    start = messages.start("hello_cities", instance_id="i-1", start_at=datetime(2030, 1, 1, tzinfo=UTC))
    approval = messages.approval("i-2", False, "ada", "no")
    event = messages.event("i-3", "PaymentReceived", PAYMENT)
    assert isinstance(reread(start), StartRequest) and reread(start) == start.request
    assert reread(approval) == approval.request == ApprovalRequest("i-2", False, "ada", "no",
                                                                    cloudevent=approval.request.cloudevent)
    assert reread(event) == event.request and isinstance(event.request, EventRequest)
    for outgoing, subject in [(start, "start"), (approval, "approval"), (event, "event")]:
        assert outgoing.message.subject == subject  # kept for display even in a CloudEvent
        assert (outgoing.event_id == outgoing.message_id) is (mode is not None)


def test_plain_messages_are_json_bodies_with_a_subject() -> None:
    outgoing = Messages().event("i-3", "PaymentReceived", PAYMENT, message_id="m-1")
    assert json.loads(body_of(outgoing)) == {"instance_id": "i-3", "name": "PaymentReceived", "data": PAYMENT}
    assert (outgoing.message.content_type, outgoing.message_id, outgoing.event_id) == ("application/json", "m-1",
                                                                                       None)


def test_a_structured_cloudevent_carries_the_body_as_data() -> None:
    outgoing = Messages(cloudevents="structured", source="/billing").start("hello_cities", message_id="ce-9")
    envelope = json.loads(body_of(outgoing))
    assert outgoing.message.content_type == "application/cloudevents+json"
    assert (envelope["specversion"], envelope["id"], envelope["source"], envelope["type"]) == (
        "1.0", "ce-9", "/billing", "sbworker.start")
    assert envelope["data"] == {"orchestration": "hello_cities"} and envelope["time"].endswith("Z")
    assert outgoing.instance_id == "ce-9"  # the event id is the default instance id


def test_a_binary_cloudevent_carries_its_attributes_as_properties() -> None:
    outgoing = Messages(cloudevents="binary").approval("order-1", True, "ada", message_id="ce-7")
    props = outgoing.message.application_properties
    assert {k: props[k] for k in ("cloudEvents_specversion", "cloudEvents_id", "cloudEvents_source",
                                  "cloudEvents_type", "cloudEvents_subject")} == {
        "cloudEvents_specversion": "1.0", "cloudEvents_id": "ce-7", "cloudEvents_source": DEFAULT_SOURCE,
        "cloudEvents_type": "sbworker.approval", "cloudEvents_subject": "order-1"}
    assert isinstance(props["cloudEvents_time"], datetime)  # sent as an AMQP timestamp
    assert json.loads(body_of(outgoing))["approver"] == "ada"


@pytest.mark.parametrize(("build", "reason", "named"), [
    (lambda m: m.start("say_hello"), "UnknownOrchestration", "registered: approval_workflow"),
    (lambda m: m.start("hello_cities", instance_id="i" * 101), "InstanceIdTooLong", "101 characters"),
    (lambda m: m.start("hello_cities", instance_id="@counter@1"), "ReservedInstanceId", "reserve for entity ids"),
    (lambda m: m.start("workflow_with_retry", {"retry": {"max_attempts": 100}}), "InputOutOfBounds", "max_attempts"),
    (lambda m: m.start("hello_cities", {"x": float("nan")}), "InvalidJson", "finite number"),
    (lambda m: m.approval("i", True, ""), "SchemaViolation", "$.approver"),
    (lambda m: m.event("i", "Shipped", {}), "UnknownEvent", "declared: ApprovalEvent, PaymentReceived"),
    (lambda m: m.event("i", "PaymentReceived", {**PAYMENT, "currency": 1}), "SchemaViolation",
     "$.data.currency"),
    (lambda m: m.event("i", "PaymentReceived", {**PAYMENT, "message_id": "x"}), "SchemaViolation",
     "$.data.message_id"),
])
@pytest.mark.parametrize("mode", [None, "structured"])
def test_what_the_listener_would_dead_letter_is_refused_with_its_reason(build: Any, reason: str, named: str,
                                                                        mode: Any) -> None:
    with pytest.raises(Rejected) as refused:
        build(Messages(cloudevents=mode))
    assert refused.value.reason == reason and named in refused.value.description
    assert isinstance(refused.value, ValueError)


def test_the_configured_bounds_apply() -> None:
    small = Messages(bounds=Limits(max_input_bytes=1024, max_event_bytes=1024))
    with pytest.raises(Rejected, match="MAX_INPUT_BYTES") as refused:
        small.start("hello_cities", "x" * 2000)
    assert refused.value.reason == "InputTooLarge"


def test_verify_is_the_listeners_parse() -> None:
    body = json.dumps({"orchestration": "hello_cities"}).encode()
    assert verify(body, subject="start", content_type="application/json", message_id="m") == contract.parse(
        body, subject="start", content_type="application/json", message_id="m", is_registered=lambda _: True)
    with pytest.raises(Rejected) as refused:
        verify(body, subject="begin", content_type="application/json", message_id="m")
    assert refused.value.reason == "UnknownSubject"


@pytest.mark.parametrize("mode", [None, "structured"])
def test_with_sessions_each_message_goes_in_its_instances_session_unless_another_is_named(mode: Any) -> None:
    messages = Messages(cloudevents=mode, sessions=True)
    start = messages.start("hello_cities")
    assert start.message.session_id == start.instance_id  # the instance id defaults to the message (event) id
    assert messages.approval("i-2", True, "ada").message.session_id == "i-2"
    assert messages.event("i-3", "PaymentReceived", PAYMENT, session_id="customer-7").message.session_id == \
        "customer-7"
    assert Messages(cloudevents=mode).start("hello_cities", instance_id="i-4").message.session_id is None
    assert Messages().approval("i-5", True, "ada", session_id="k").message.session_id == "k"
    with pytest.raises(ValueError, match="1 to 128 characters"):
        messages.start("hello_cities", session_id="k" * 129)

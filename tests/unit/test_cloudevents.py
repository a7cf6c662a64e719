"""CloudEvents 1.0 in both content modes of the AMQP binding: what the contract accepts, and every broken envelope's
reason. Pure: `contract.parse` with the envelope as bytes and properties (tests/integration/test_cloudevents.py
sends the same through localbus)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrations import registry
from orchestrations.events import CATALOG
from sbworker.core import cloudevents, config
from sbworker.core.cloudevents import CloudEvent
from sbworker.core.codes import CLOUDEVENT_TYPES, Reason
from sbworker.core.contract import ApprovalRequest, EventRequest, Invalid, StartRequest, parse
from sbworker.core.errors import ConfigError

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
START = {"orchestration": "hello_cities"}
APPROVAL = {"instance_id": "order-1", "approved": True, "approver": "ada"}
EVENT = {"instance_id": "inv-1", "name": "PaymentReceived",
         "data": {"amount_cents": 1, "currency": "EUR", "reference": "r"}}
BODIES = {"sbworker.start": START, "sbworker.approval": APPROVAL, "sbworker.event": EVENT}


def envelope(event_type: str = "sbworker.start", **attributes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"specversion": "1.0", "id": "ce-1", "source": "/orders", "type": event_type,
                            "datacontenttype": "application/json", "data": BODIES.get(event_type, START)}
    base.update(attributes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP: Any = object()


def structured(doc: Any, content_type: str = "application/cloudevents+json; charset=utf-8", **kw: Any) -> Any:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return run(raw, content_type=content_type, **kw)


def properties(event_type: str = "sbworker.start", prefix: str = "cloudEvents_", **attributes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"specversion": "1.0", "id": "ce-2", "source": "/billing", "type": event_type}
    base.update(attributes)
    return {prefix + k: v for k, v in base.items() if v is not DROP}


def binary(body: Any, props: dict[str, Any], content_type: str | None = "application/json", **kw: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return run(raw, content_type=content_type, application_properties=props, **kw)


def run(raw: bytes, *, content_type: str | None, subject: str | None = "ignored", message_id: str = "sb-1",
        application_properties: dict[str, Any] | None = None, types: dict[str, str] | None = None,
        max_bytes: int = 65536) -> Any:
    return parse(raw, subject=subject, content_type=content_type, message_id=message_id,
                 is_registered=registry.is_startable, registered_names=registry.orchestration_names, events=CATALOG,
                 application_properties=application_properties, max_bytes=max_bytes,
                 cloudevent_types=types if types is not None else CLOUDEVENT_TYPES)


def invalid(result: Any, reason: Reason) -> str:
    assert isinstance(result, Invalid), result
    assert result.reason == reason, result
    return result.description


# --- accepted, both modes ---------------------------------------------------------------------------------


def test_structured_start_uses_the_id_as_instance_id_and_keeps_the_attributes() -> None:
    result = structured(envelope(time="2026-12-06T10:00:00+02:00", subject="order-1", traceparent=TRACEPARENT))
    assert result == StartRequest("hello_cities", "ce-1", None, None, True, cloudevent=CloudEvent(
        id="ce-1", source="/orders", type="sbworker.start", mode="structured", subject="order-1",
        time="2026-12-06T08:00:00Z", traceparent=TRACEPARENT))
    assert result.cloudevent.tags() == {"cloudevents.id": "ce-1", "cloudevents.source": "/orders",
                                        "cloudevents.type": "sbworker.start", "cloudevents.subject": "order-1",
                                        "cloudevents.time": "2026-12-06T08:00:00Z"}


def test_binary_start_reads_the_attributes_from_application_properties() -> None:
    when = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    result = binary({**START, "instance_id": "explicit"}, properties(time=when, subject="s", traceparent=TRACEPARENT))
    assert isinstance(result, StartRequest) and result.instance_id == "explicit"
    assert result.cloudevent == CloudEvent(id="ce-2", source="/billing", type="sbworker.start", mode="binary",
                                           subject="s", time="2026-12-06T09:30:00Z", traceparent=TRACEPARENT)


@pytest.mark.parametrize("time", [1765013400000, "2026-12-06T09:30:00Z", datetime(2026, 12, 6, 9, 30, tzinfo=UTC)])
def test_binary_time_as_amqp_timestamp_or_canonical_string(time: Any) -> None:
    expected = "2025-12-06T09:30:00Z" if isinstance(time, int) else "2026-12-06T09:30:00Z"
    assert binary(START, properties(time=time)).cloudevent.time == expected


@pytest.mark.parametrize("prefix", ["cloudEvents_", "cloudEvents:"])
def test_both_binary_prefixes(prefix: str) -> None:
    assert isinstance(binary(START, properties(prefix=prefix)), StartRequest)


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_approval_and_event_types(mode: str) -> None:
    for event_type, expected in [("sbworker.approval", ApprovalRequest), ("sbworker.event", EventRequest)]:
        body = BODIES[event_type]
        result = (structured(envelope(event_type)) if mode == "structured"
                  else binary(body, properties(event_type)))
        assert isinstance(result, expected) and result.cloudevent is not None, result
        assert result.cloudevent.mode == mode


def test_the_service_bus_subject_is_ignored_for_a_cloudevent() -> None:
    assert isinstance(structured(envelope(), subject="approval"), StartRequest)
    assert isinstance(structured(envelope(), subject=None), StartRequest)


def test_other_types_map_through_the_settings() -> None:
    types = config.cloudevent_types({"CLOUDEVENTS_TYPES": "com.dapr.event.sent=start, com.example.paid=event"})
    assert isinstance(structured(envelope("com.dapr.event.sent", data=START), types=types), StartRequest)
    assert isinstance(binary(EVENT, properties("com.example.paid"), types=types), EventRequest)


def test_absent_datacontenttype_means_json_and_json_suffixes_are_json() -> None:
    assert isinstance(structured(envelope(datacontenttype=DROP)), StartRequest)
    assert isinstance(structured(envelope(datacontenttype="application/vnd.orders+json")), StartRequest)
    assert isinstance(binary(START, properties(), content_type=None), StartRequest)
    assert isinstance(binary(START, properties(), content_type="application/vnd.x+json; charset=utf-8"),
                      StartRequest)


def test_extensions_are_allowed() -> None:
    assert isinstance(structured(envelope(partitionkey="p1", comexampleextension1="x")), StartRequest)


def test_the_data_is_checked_like_a_plain_body() -> None:
    assert invalid(structured(envelope(data={"orchestration": "nope"})), Reason.UNKNOWN_ORCHESTRATION)
    assert invalid(structured(envelope("sbworker.approval", data={**APPROVAL, "approved": "yes"})),
                   Reason.SCHEMA_VIOLATION).startswith("$.approved")
    assert invalid(binary(b"{nope", properties()), Reason.INVALID_JSON)
    assert "$.data.input: duplicate key" in invalid(
        structured(b'{"specversion":"1.0","id":"1","source":"/s","type":"sbworker.start",'
                   b'"data":{"orchestration":"hello_cities","input":1,"input":2}}'), Reason.INVALID_JSON)


def test_data_may_nest_as_deep_as_a_plain_body() -> None:
    deep: Any = 0
    for _ in range(99):  # the body object is level 0: input holds 99 more levels
        deep = [deep]
    assert isinstance(structured(envelope(data={"orchestration": "hello_cities", "input": deep})), StartRequest)
    assert invalid(structured(envelope(data={"orchestration": "hello_cities", "input": [deep]})),
                   Reason.INVALID_JSON)


def test_an_unusable_id_is_named_as_the_cloudevents_id() -> None:
    description = invalid(structured(envelope(id="a\u0001b")), Reason.MISSING_MESSAGE_ID)
    assert "defaults to the CloudEvents id" in description and "message_id" not in description


# --- broken envelopes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "reason", "named"), [
    (envelope(specversion=DROP), Reason.INVALID_CLOUD_EVENT, "specversion missing"),
    (envelope(id=DROP), Reason.INVALID_CLOUD_EVENT, "id missing"),
    (envelope(source=DROP), Reason.INVALID_CLOUD_EVENT, "source missing"),
    (envelope(type=DROP), Reason.INVALID_CLOUD_EVENT, "type missing"),
    (envelope(specversion="0.3"), Reason.INVALID_CLOUD_EVENT, 'specversion "0.3" is not supported'),
    (envelope(specversion=1.0), Reason.INVALID_CLOUD_EVENT, 'specversion "1.0" is not supported'),
    (envelope(id=""), Reason.INVALID_CLOUD_EVENT, "id: Attribute 'id' must not be None or empty"),
    (envelope(id=7), Reason.INVALID_CLOUD_EVENT, "id:"),
    (envelope(source=""), Reason.INVALID_CLOUD_EVENT, "source:"),
    (envelope(subject=""), Reason.INVALID_CLOUD_EVENT, "subject:"),
    (envelope(time="yesterday"), Reason.INVALID_CLOUD_EVENT, 'time "yesterday" is not an RFC 3339 timestamp'),
    (envelope(time="2026-12-06T10:00:00"), Reason.INVALID_CLOUD_EVENT, "with an offset"),
    (envelope(Bad_Name="x"), Reason.INVALID_CLOUD_EVENT, "Bad_Name"),
    (envelope(source="/" + "s" * 1100), Reason.INVALID_CLOUD_EVENT, "source is 1101 characters"),
    (envelope(traceparent=5), Reason.INVALID_CLOUD_EVENT, "traceparent must be a string"),
    (envelope(data_base64="e30="), Reason.INVALID_CLOUD_EVENT, "both data and data_base64"),
    (envelope(data=DROP, data_base64="e30="), Reason.INVALID_CLOUD_EVENT, "data_base64 with a JSON datacontenttype"),
    (envelope(data=DROP, datacontenttype=DROP, data_base64="e30="), Reason.INVALID_CLOUD_EVENT, "data_base64"),
    (envelope(data=DROP, datacontenttype="application/octet-stream", data_base64="AAE="),
     Reason.UNSUPPORTED_CONTENT_TYPE, "data must be JSON"),
    (envelope(datacontenttype="text/plain", data="hi"), Reason.UNSUPPORTED_CONTENT_TYPE, '"text/plain"'),
    (envelope(datacontenttype="application/json; charset=latin-1"), Reason.UNSUPPORTED_CONTENT_TYPE, "latin-1"),
    (envelope("com.example.unmapped"), Reason.UNKNOWN_SUBJECT, "com.example.unmapped"),
    (envelope(data=DROP), Reason.SCHEMA_VIOLATION, "$.data: missing"),
    ([envelope()], Reason.INVALID_CLOUD_EVENT, "must be a JSON object"),
    (b"{not json", Reason.INVALID_JSON, "not valid JSON"),
    (b"\xff{}", Reason.INVALID_ENCODING, "offset 0"),
])
def test_a_broken_structured_envelope_is_refused(doc: Any, reason: Reason, named: str) -> None:
    assert named in invalid(structured(doc), reason)


@pytest.mark.parametrize(("content_type", "named"), [
    ("application/cloudevents-batch+json", "batch is not supported"),
    ("application/cloudevents+avro", '"application/cloudevents+avro" is not supported'),
    ("application/cloudevents+json; charset=utf-16", "must be UTF-8"),
])
def test_only_single_json_events_are_read(content_type: str, named: str) -> None:
    assert named in invalid(structured(envelope(), content_type=content_type), Reason.INVALID_CLOUD_EVENT)


@pytest.mark.parametrize(("props", "content_type", "reason", "named"), [
    (properties(specversion=DROP), "application/json", Reason.INVALID_CLOUD_EVENT, "specversion missing"),
    (properties(source=DROP), "application/json", Reason.INVALID_CLOUD_EVENT, "source missing"),
    (properties(specversion="0.3"), "application/json", Reason.INVALID_CLOUD_EVENT, '"0.3"'),
    ({**properties(), "cloudEvents:subject": "x"}, "application/json", Reason.INVALID_CLOUD_EVENT, "mixed"),
    (properties(datacontenttype="application/json"), "application/json", Reason.INVALID_CLOUD_EVENT,
     "AMQP content-type"),
    (properties(time="not a time"), "application/json", Reason.INVALID_CLOUD_EVENT, "not an RFC 3339 timestamp"),
    (properties(time=True), "application/json", Reason.INVALID_CLOUD_EVENT, "got bool"),
    (properties(), "text/plain", Reason.UNSUPPORTED_CONTENT_TYPE, '"text/plain"'),
    (properties("com.example.unmapped"), "application/json", Reason.UNKNOWN_SUBJECT, "CLOUDEVENTS_TYPES"),
])
def test_a_broken_binary_event_is_refused(props: dict[str, Any], content_type: str, reason: Reason,
                                          named: str) -> None:
    assert named in invalid(binary(START, props, content_type=content_type), reason)


def test_size_is_checked_before_the_envelope() -> None:
    invalid(structured(b"x" * 70_000), Reason.TOO_LARGE)


def test_a_plain_message_is_not_a_cloudevent() -> None:
    plain = run(json.dumps(START).encode(), content_type="application/json", subject="start",
                application_properties={"traceparent": TRACEPARENT, "cloudevents": "not a prefix"})
    assert isinstance(plain, StartRequest) and plain.cloudevent is None and plain.instance_id == "sb-1"


# --- trace context and settings ---------------------------------------------------------------------------


def test_trace_carrier_reads_the_extension_in_either_mode() -> None:
    body = json.dumps(envelope(traceparent=TRACEPARENT, tracestate="k=v")).encode()
    assert cloudevents.trace_carrier(body, "application/cloudevents+json", None) == {
        "traceparent": TRACEPARENT, "tracestate": "k=v"}
    assert cloudevents.trace_carrier(b"{}", "application/json", {b"cloudEvents:traceparent": TRACEPARENT.encode()}) \
        == {"traceparent": TRACEPARENT}
    assert cloudevents.trace_carrier(b"{broken", "application/cloudevents+json", None) == {}
    assert cloudevents.trace_carrier(json.dumps(START).encode(), "application/json", {"traceparent": "x"}) == {}


@pytest.mark.parametrize(("raw", "problem"), [
    ("no-equals", "expected type=action pairs"),
    ("a=stop", "must be start, approval or event"),
    ("sbworker.start=event", "always means start"),
    ("=start", "expected type=action pairs"),
])
def test_bad_type_mappings_are_configuration_errors(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        config.cloudevent_types({"CLOUDEVENTS_TYPES": raw})
    assert "CLOUDEVENTS_TYPES" in str(caught.value)


def test_default_types_are_always_there() -> None:
    assert config.load({}).listener.cloudevent_types == CLOUDEVENT_TYPES
    assert config.cloudevent_types({"CLOUDEVENTS_TYPES": "x=approval,"}) == {**CLOUDEVENT_TYPES,
                                                                             "x": "approval"}

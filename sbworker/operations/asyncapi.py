"""The message contract as an AsyncAPI 3.0 document (`sbworker contract --asyncapi`; committed as docs/asyncapi.yaml).

Built from what the listener itself uses, so the document cannot drift from the behaviour: the payload schemas are
the JSON Schema files the contract validates with (start, approval, event, and each declared event's data, from
orchestrations/events.py), the subjects and CloudEvents types are the contract's constants, and the dead-letter
reasons are every member of `Reason`. Every example in it is a message the listener accepts
(tests/contract/test_asyncapi.py reads them back through its parser), and the official AsyncAPI parser validates
the whole document in CI.

The schema files become components (`#/components/schemas/start`, ...), their shared `$defs` components too, with
each `#/$defs/x` reference rewritten to point there: inside an AsyncAPI document a `#/...` reference points into
the document, not into the file it came from. `$schema`/`$id` are dropped; what remains is draft-07-compatible JSON
Schema, AsyncAPI's default schema format.
"""

from __future__ import annotations

import json
from importlib import metadata, resources
from typing import Any, Final

import yaml

from orchestrations.events import CATALOG
from sbworker.core import cloudevents, contract
from sbworker.core.codes import CLOUDEVENT_TYPES, Reason
from sbworker.core.config import (
    DEFAULT_QUEUE,
    DEFAULT_SESSION_QUEUE,
    DEFAULT_SESSION_SUBSCRIPTION,
    DEFAULT_SUBSCRIPTION,
    DEFAULT_TOPIC,
)
from sbworker.core.entities import MAX_SESSION_ID, default_retry_queue
from sbworker.core.events import EventCatalog
from sbworker.core.limits import MAX_CLOUDEVENT_ATTRIBUTE_CHARS

ASYNCAPI_VERSION: Final = "3.0.0"

#: What each dead-letter reason means, for the document (the README's tables say the same).
REASON_MEANINGS: Final[dict[str, str]] = {
    Reason.TOO_LARGE: "The body is larger than MAX_MESSAGE_BYTES (checked before anything is decoded).",
    Reason.UNKNOWN_SUBJECT: "The subject is missing or not exactly start, approval or event; for a CloudEvent, its "
                            "type is not mapped to one (CLOUDEVENTS_TYPES).",
    Reason.UNSUPPORTED_CONTENT_TYPE: "content_type (or a CloudEvent's datacontenttype) is not JSON, or not UTF-8.",
    Reason.INVALID_ENCODING: "The body is not valid UTF-8.",
    Reason.INVALID_JSON: "Not JSON, empty, duplicate keys, NaN/Infinity, numbers out of range, unpaired "
                         "surrogates, or nesting deeper than 100 levels.",
    Reason.SCHEMA_VIOLATION: "Valid JSON that breaks the payload's schema (or a declared event's data schema).",
    Reason.UNKNOWN_ORCHESTRATION: "The orchestration is not registered; the description lists the registered ones.",
    Reason.MISSING_MESSAGE_ID: "A start without instance_id whose message id (or CloudEvents id) is not a usable "
                               "instance id.",
    Reason.UNSUPPORTED_BODY: "The body is an AMQP sequence or a non-string AMQP value, not data.",
    Reason.UNDECODABLE_MESSAGE: "The Service Bus SDK could not decode a section of the message.",
    Reason.MESSAGE_ID_TOO_LONG: "An early approval or event whose message id is over 128 characters: it cannot be "
                                "re-enqueued to wait for its instance.",
    Reason.UNCOPYABLE_PROPERTIES: "An early approval or event with an application property the Service Bus SDK "
                                  "cannot send again (an integer past 32 bits, on an SDK version sbworker.patches "
                                  "was not verified with): it cannot be re-enqueued to wait for its instance.",
    Reason.UNKNOWN_EVENT: "The event name is not declared, or the instance's orchestration does not wait for it.",
    Reason.INSTANCE_ID_TOO_LONG: "The instance id is longer than the Durable Task Scheduler's 100 characters.",
    Reason.RESERVED_INSTANCE_ID: "The instance id starts with \"@\", which the Durable Task SDKs reserve for "
                                 "entity ids (\"@name@key\").",
    Reason.INPUT_TOO_LARGE: "The input is larger than MAX_INPUT_BYTES as JSON in DTS.",
    Reason.INPUT_OUT_OF_BOUNDS: "The orchestration refuses its input (e.g. workflow_with_retry's retry overrides).",
    Reason.EVENT_TOO_LARGE: "The event data (with the message_id the listener adds) is larger than MAX_EVENT_BYTES.",
    Reason.INVALID_CLOUD_EVENT: "A CloudEvent whose envelope breaks the CloudEvents 1.0 spec or its AMQP binding.",
    Reason.INSTANCE_NOT_FOUND: "An approval or event whose instance did not appear within "
                               "APPROVAL_NOT_FOUND_WINDOW_SECONDS.",
    Reason.INSTANCE_NOT_RUNNING: "An approval or event for an instance that is no longer running.",
    Reason.NOT_AN_APPROVAL_WORKFLOW: "An approval for an instance whose orchestration never waits for one.",
}
#: Reasons Service Bus itself gives (MaxDeliveryCount reached; expired, with DeadLetteringOnMessageExpiration).
BROKER_REASONS: Final[dict[str, str]] = {
    "MaxDeliveryCountExceeded": "Set by Service Bus: abandoned (transient DTS failure) MaxDeliveryCount times.",
    "TTLExpiredException": "Set by Service Bus: the message expired before it was handled.",
}

_KINDS: Final = (contract.SUBJECT_START, contract.SUBJECT_APPROVAL, contract.SUBJECT_EVENT)
_TITLES: Final = {"start": "Start an orchestration", "approval": "Approve or reject a waiting orchestration",
                  "event": "Raise a declared event on a waiting orchestration"}
_TYPE_OF: Final = {subject: event_type for event_type, subject in CLOUDEVENT_TYPES.items()}
_FORMS: Final = ("plain", "structured", "binary")


def document(events: EventCatalog = CATALOG) -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as a dict (`to_yaml` writes it)."""
    messages: dict[str, Any] = {}
    for kind in _KINDS:
        for form in _FORMS:
            messages[_message_key(kind, form)] = _message(kind, form, events)
    messages["deadLettered"] = _dead_lettered()
    channel_messages = {key: {"$ref": f"#/components/messages/{key}"} for key in messages if key != "deadLettered"}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "sbworker message contract",
            "version": _version(),
            "description": _INFO,
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "azure": {
                "host": "{namespace}.servicebus.windows.net", "protocol": "amqps", "protocolVersion": "1.0",
                "description": "Azure Service Bus. Publishers need the Azure Service Bus Data Sender role.",
                "variables": {"namespace": {"description": "The Service Bus namespace (SERVICEBUS_NAMESPACE)."}},
            },
            "local": {
                "host": "localhost:5672", "protocol": "amqp", "protocolVersion": "1.0",
                "description": "localbus (make run) or the Service Bus emulator, with the emulator's connection "
                               "string.",
            },
        },
        "channels": {
            "requests": {
                "address": "{entity}",
                "title": "Requests",
                "description": "The queue (SERVICEBUS_QUEUE) or the topic (SERVICEBUS_TOPIC) sbworker reads. "
                               "In session mode (SERVICEBUS_SESSIONS=true) the queue, or the subscription "
                               "sbworker reads, requires sessions: every message needs a session id, and the "
                               "messages of one session are handled one at a time, in the order sent.",
                "parameters": {"entity": {
                    "description": "The queue (the session-enabled one in session mode), or in the topic form the "
                                   "topic.",
                    "enum": [DEFAULT_QUEUE, DEFAULT_SESSION_QUEUE, DEFAULT_TOPIC], "default": DEFAULT_QUEUE}},
                "messages": channel_messages,
            },
            "deadLetters": {
                "address": "{entity}/$DeadLetterQueue",
                "title": "Dead letters",
                "description": "Where a message the listener cannot take ends, unchanged, with DeadLetterReason "
                               "and DeadLetterErrorDescription. `sbworker dlq` shows and resubmits them.",
                "parameters": {"entity": {
                    "description": "The queue; in the topic form the subscription or the worker's retry queue.",
                    "enum": [DEFAULT_QUEUE, f"{DEFAULT_TOPIC}/Subscriptions/{DEFAULT_SUBSCRIPTION}",
                             default_retry_queue(DEFAULT_TOPIC, DEFAULT_SUBSCRIPTION), DEFAULT_SESSION_QUEUE,
                             f"{DEFAULT_TOPIC}/Subscriptions/{DEFAULT_SESSION_SUBSCRIPTION}",
                             default_retry_queue(DEFAULT_TOPIC, DEFAULT_SESSION_SUBSCRIPTION)],
                    "default": DEFAULT_QUEUE}},
                "messages": {"deadLettered": {"$ref": "#/components/messages/deadLettered"}},
            },
        },
        "operations": {
            "receiveRequests": {
                "action": "receive",
                "channel": {"$ref": "#/channels/requests"},
                "title": "Take a request",
                "summary": "Start an orchestration, or raise an approval or a declared event on an instance.",
                "description": "Peek-lock; each message is completed, re-enqueued (an approval or event before "
                               "its instance exists), abandoned (DTS unavailable) or dead-lettered.",
                "messages": [{"$ref": f"#/channels/requests/messages/{key}"} for key in channel_messages],
            },
            "deadLetter": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "title": "Dead-letter a message",
                "summary": "A message the listener refuses, with the reason and a description naming the field.",
                "messages": [{"$ref": "#/channels/deadLetters/messages/deadLettered"}],
            },
        },
        "components": {"schemas": _schemas(events), "messages": messages},
    }


def to_yaml(doc: dict[str, Any]) -> str:
    header = "# Generated by `sbworker contract --asyncapi` from the listener's own schemas: do not edit by hand.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=118, default_flow_style=False)


_INFO: Final = """\
What a publisher sends to sbworker's queue (or topic) to start a durable orchestration on the Durable Task \
Scheduler, approve one, or raise an event it waits for; and what the listener does with a message it refuses.

Each request comes in three forms: plain (a JSON body, the kind in the Service Bus subject), and as a CloudEvent \
1.0 over the AMQP binding in structured mode (the envelope in the body, content type \
application/cloudevents+json) or binary mode (attributes as cloudEvents_ application properties; cloudEvents: is \
accepted too). A CloudEvent's type names the kind, its data is exactly the plain body, and its id stands for the \
message id.

Message headers name the AMQP message properties as the Service Bus SDKs do (subject, content_type, message_id, \
session_id) and application properties by their keys (traceparent, cloudEvents_*). A traceparent (W3C) continues \
the publisher's trace.

Bodies are UTF-8 JSON with unique keys, finite numbers and at most 100 levels of nesting; the schemas below are the \
files the listener validates with, and rules a schema cannot express are stated in their descriptions."""


def _message_key(kind: str, form: str) -> str:
    return kind if form == "plain" else f"{kind}CloudEvent{form.capitalize()}"


def _message(kind: str, form: str, events: EventCatalog) -> dict[str, Any]:
    message_id = f"example-{kind}-{form}"
    examples = _example_bodies(kind, events)
    message: dict[str, Any] = {"name": _message_key(kind, form), "title": _TITLES[kind]}
    if form == "plain":
        message.update({
            "summary": f'Plain JSON, subject "{kind}".',
            "contentType": "application/json",
            "headers": {"allOf": [_ref("plainHeaders"), {"properties": {"subject": {"const": kind}}}]},
            "payload": _ref(kind),
            "examples": [{"name": name, "payload": payload, "headers": {
                "subject": kind, "content_type": "application/json", "message_id": f"{message_id}-{i}"}}
                for i, (name, payload) in enumerate(examples)],
        })
    elif form == "structured":
        message.update({
            "summary": f"A CloudEvent of type {_TYPE_OF[kind]}, structured mode (JSON event format).",
            "contentType": cloudevents.STRUCTURED_JSON,
            "headers": _ref("structuredHeaders"),
            "payload": {"allOf": [_ref("cloudEvent"), {"properties": {"type": {"const": _TYPE_OF[kind]},
                                                                      "data": _ref(kind)}}]},
            "examples": [{"name": name, "headers": {"content_type": cloudevents.STRUCTURED_JSON,
                                                    "message_id": f"{message_id}-{i}"},
                          "payload": {**_attributes(kind, f"{message_id}-{i}"), "datacontenttype": "application/json",
                                      "data": payload}}
                         for i, (name, payload) in enumerate(examples)],
        })
    else:
        message.update({
            "summary": f"A CloudEvent of type {_TYPE_OF[kind]}, binary mode (attributes as application "
                       "properties, the data as the body).",
            "contentType": "application/json",
            "headers": {"allOf": [_ref("binaryHeaders"),
                                  {"properties": {"cloudEvents_type": {"const": _TYPE_OF[kind]}}}]},
            "payload": _ref(kind),
            "examples": [{"name": name, "payload": payload, "headers": {
                "content_type": "application/json", "message_id": f"{message_id}-{i}",
                **{f"cloudEvents_{k}": v for k, v in _attributes(kind, f"{message_id}-{i}").items()}}}
                for i, (name, payload) in enumerate(examples)],
        })
    return message


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas(events: EventCatalog) -> dict[str, Any]:
    """The listener's schema files, and the headers and envelope every form shares."""
    files = {kind: _schema_file(f"{kind}.schema.json") for kind in _KINDS}
    instance_ids = [schema["$defs"]["instanceId"] for schema in files.values()]
    if any(found != instance_ids[0] for found in instance_ids):
        raise ValueError("the schema files define instanceId differently")
    schemas: dict[str, Any] = {"instanceId": instance_ids[0]}
    for kind, schema in files.items():
        schemas[kind] = _local(schema)
    schemas["event"]["oneOf"] = [{
        "title": name,
        "description": f"Awaited by: {', '.join(events.orchestrations_awaiting(name)) or 'none'}.",
        "properties": {"name": {"const": name}, "data": _ref(name)},
    } for name in events.names()]
    for name in events.names():
        schemas[name] = _local(_declared(events, name))
    schemas["plainHeaders"] = _headers(content_type="application/json", required=["subject"], subject={
        "type": "string", "enum": list(_KINDS),
        "description": "The kind of request (exact, case-sensitive; surrounding whitespace is ignored)."})
    schemas["structuredHeaders"] = _headers(content_type=cloudevents.STRUCTURED_JSON, required=["content_type"])
    schemas["binaryHeaders"] = _headers(content_type="application/json",
                                        required=[f"cloudEvents_{name}" for name in cloudevents.REQUIRED],
                                        binary=True)
    schemas["cloudEvent"] = _envelope()
    return schemas


def _headers(*, content_type: str, required: list[str], subject: dict[str, Any] | None = None,
             binary: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"subject": subject or {
        "type": "string", "description": "Ignored for a CloudEvent (its type decides); Service Bus tools show it."}}
    properties["content_type"] = {"type": "string", "description": (
        f"AMQP content-type: {content_type}. Parameters are allowed, a charset other than UTF-8 is not. "
        + ("Unset means JSON; a CloudEvent in binary mode may use any +json type."
           if content_type == "application/json" else "It selects structured mode."))}
    properties["message_id"] = {"type": "string", "minLength": 1, "maxLength": 128, "description": (
        "The idempotency key and the default instance id of a start (a CloudEvent's id takes both roles). The "
        "Service Bus SDKs send at most 128 characters.")}
    properties["session_id"] = {"type": "string", "minLength": 1, "maxLength": MAX_SESSION_ID, "description": (
        "The AMQP group-id. Required in session mode (SERVICEBUS_SESSIONS=true), where Service Bus refuses a message "
        "without one: the messages of one session are handled one at a time, in the order sent. sbworker's "
        "publishers use the instance id (so an approval cannot overtake its start) unless given another key, e.g. a "
        "customer id to run all of one customer's workflows in order. Ignored by an entity without sessions.")}
    properties["traceparent"] = {"type": "string", "description": "Application property: W3C trace context; the "
                                                                   "listener's span continues it (Diagnostic-Id is "
                                                                   "read too)."}
    if binary:
        properties.update(_binary_attributes())
    return {"type": "object", "properties": properties, "required": required}


def _binary_attributes() -> dict[str, Any]:
    def text(description: str) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": MAX_CLOUDEVENT_ATTRIBUTE_CHARS,
                "description": description}

    return {
        "cloudEvents_specversion": {"type": "string", "const": cloudevents.SPECVERSION},
        "cloudEvents_id": text("The event id: the default instance id of a start, the idempotency key otherwise."),
        "cloudEvents_source": text("URI-reference of the producer; kept as the instance's cloudevents.source tag."),
        "cloudEvents_type": text("What the event is (sbworker.start, sbworker.approval, sbworker.event); other "
                                 "types map through CLOUDEVENTS_TYPES."),
        "cloudEvents_subject": text("Optional; kept as a tag."),
        "cloudEvents_time": {"description": "Optional: an AMQP timestamp, or an RFC 3339 string with an offset; "
                                            "kept as a tag in UTC.",
                             "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]},
        "cloudEvents_traceparent": text("Distributed-tracing extension: continues the trace when the message "
                                        "has no traceparent of its own."),
    }


def _envelope() -> dict[str, Any]:
    def text(description: str, **extra: Any) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": MAX_CLOUDEVENT_ATTRIBUTE_CHARS,
                "description": description, **extra}

    return {
        "type": "object",
        "description": "A CloudEvents 1.0 envelope in the JSON event format; its data is the plain body.",
        "properties": {
            "specversion": {"type": "string", "const": cloudevents.SPECVERSION},
            "id": text("The default instance id of a start; the idempotency key of an approval or event."),
            "source": text("URI-reference of the producer; kept as the instance's cloudevents.source tag.",
                           format="uri-reference"),
            "type": text("Selects the action; other types map through CLOUDEVENTS_TYPES."),
            "subject": text("Optional; kept as a tag."),
            "time": {"type": "string", "format": "date-time", "description": "RFC 3339 with an offset; kept as a "
                                                                             "tag in UTC."},
            "datacontenttype": {"type": "string", "description": "application/json or any +json type; absent "
                                                                 "means JSON."},
            "traceparent": {"type": "string", "description": "Distributed-tracing extension."},
            "tracestate": {"type": "string"},
            "data": {"description": "The plain body of the request."},
        },
        "required": ["specversion", "id", "source", "type", "data"],
        "not": {"required": ["data_base64"], "description": "data must be JSON: data_base64 is refused."},
    }


def _example_bodies(kind: str, events: EventCatalog) -> list[tuple[str, dict[str, Any]]]:
    if kind == contract.SUBJECT_START:
        return [("hello", {"orchestration": "hello_cities"}),
                ("with input, id and time", {"orchestration": "approval_workflow",
                                             "input": {"item": "laptop", "amount": 1200},
                                             "instance_id": "order-43", "start_at": "2030-01-01T09:00:00Z"})]
    if kind == contract.SUBJECT_APPROVAL:
        return [("approve", {"instance_id": "order-43", "approved": True, "approver": "alice@example.com",
                             "comment": "ok"})]
    return [(name, {"instance_id": "order-43" if name == "ApprovalEvent" else "invoice-2026-0042", "name": name,
                    "data": _declared(events, name)["examples"][0]}) for name in events.names()]


def _attributes(kind: str, event_id: str) -> dict[str, str]:
    return {"specversion": cloudevents.SPECVERSION, "id": event_id, "source": "/example/shop",
            "type": _TYPE_OF[kind], "time": "2026-12-06T09:30:00Z"}


def _dead_lettered() -> dict[str, Any]:
    reasons = {**{str(reason): REASON_MEANINGS[reason] for reason in Reason}, **BROKER_REASONS}
    return {
        "name": "deadLettered",
        "title": "A refused message",
        "summary": "The original message, unchanged (body, subject, properties), with the reason and a description.",
        "headers": {"type": "object", "properties": {
            "DeadLetterReason": {"type": "string", "enum": list(reasons),
                                 "description": " ".join(f"{name}: {meaning}" for name, meaning in reasons.items())},
            "DeadLetterErrorDescription": {"type": "string", "maxLength": 1024, "description": (
                "Names the field as a JSON path and says what was expected; ends with (trace_id=...) when "
                "tracing is on.")},
        }, "required": ["DeadLetterReason", "DeadLetterErrorDescription"]},
        "payload": {"description": "The original body, byte for byte."},
        "examples": [{"name": "a string where a boolean belongs", "headers": {
            "DeadLetterReason": str(Reason.SCHEMA_VIOLATION),
            "DeadLetterErrorDescription": '$.approved: expected boolean, got string "true"'},
            "payload": {"instance_id": "order-43", "approved": "true", "approver": "alice"}}],
    }


def _schema_file(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((resources.files("sbworker.core") / "schemas" / name).read_text("utf-8"))
    return schema


def _declared(events: EventCatalog, name: str) -> dict[str, Any]:
    declared = events.get(name)
    assert declared is not None
    return dict(declared.schema)


def _local(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema file as a component: its `#/$defs/x` references point at `#/components/schemas/x` (the shared
    definitions are components themselves), and the file-level keywords are dropped."""

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#/$defs/"):
                raise ValueError(f"only local $defs references are supported, got {ref!r}")
            return {k: ("#/components/schemas/" + v.removeprefix("#/$defs/") if k == "$ref" else rewrite(v))
                    for k, v in node.items() if k not in ("$schema", "$id", "$defs")}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    local: dict[str, Any] = rewrite(schema)
    local.pop("examples", None)  # the messages' examples are the document's: each one is a message the listener takes
    return local


def _version() -> str:
    try:
        return metadata.version("sbworker")
    except metadata.PackageNotFoundError:  # a checkout without an install: the document says so
        return "0.0.0"

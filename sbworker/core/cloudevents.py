"""CloudEvents 1.0 over the AMQP protocol binding: another wire form of the same contract.

A publisher that speaks CloudEvents (Dapr pub/sub, Event Grid, any CloudEvents SDK) sends the body of our contract
as the event's `data`, and says what it is with the event `type` instead of the Service Bus subject. This module
reads the envelope, in both content modes of the binding, and hands the contract back the data, the action and the
attributes worth keeping; ``contract.parse`` does the rest exactly as for a plain message. The CNCF `cloudevents`
SDK reads and validates the attributes (required ones, their types, ``specversion`` 1.0, extension names, time).

Decisions (and why):

- Structured mode is chosen by the AMQP content type (`application/cloudevents…`), binary mode by application
  properties prefixed `cloudEvents_` or `cloudEvents:` (the binding's rule: any single message uses one separator;
  a message that mixes them is refused). Only the JSON event format is read; a batch is refused.
- Missing ``specversion``/``id``/``source``/``type`` is checked before the SDK sees the event: its constructor
  would fill in a default ``specversion``, a fresh ``id`` and the current ``time``, silently making a broken
  envelope valid.
- `data` must be JSON: `data_base64` is refused (with a JSON content type it breaks the JSON format's rules;
  with another one the data is simply not our JSON), as is a non-JSON ``datacontenttype``.
- Attribute strings are bounded (``limits.MAX_CLOUDEVENT_ATTRIBUTE_CHARS``): they are kept on the instance as tags
  and in logs.
- ``traceparent``/``tracestate`` (the distributed-tracing extension) are kept so the listener can continue the
  trace when the transport carries none of its own (``trace_carrier``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import amqp
from cloudevents.core.exceptions import BaseCloudEventException, CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkCloudEvent

from sbworker.core.codes import Reason
from sbworker.core.limits import MAX_CLOUDEVENT_ATTRIBUTE_CHARS
from sbworker.core.text import clip

STRUCTURED_JSON: Final = "application/cloudevents+json"
PREFIXES: Final = ("cloudEvents_", "cloudEvents:")
REQUIRED: Final = ("specversion", "id", "source", "type")
SPECVERSION: Final = "1.0"

# Only what trace_carrier reads from a body when tracing: a structured envelope larger than this has no trace parent.
MAX_TRACE_PEEK_BYTES: Final = 1024 * 1024
TAG_PREFIX: Final = "cloudevents."

Mode = Literal["structured", "binary"]


class CloudEventError(Exception):
    """A message that claims to be a CloudEvent and is not one we can take: `reason` is the dead-letter reason."""

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True)
class CloudEvent:
    """The attributes sbworker keeps of a CloudEvent whose data became a request."""

    id: str
    source: str
    type: str
    mode: Mode
    subject: str | None = None
    time: str | None = None  # RFC 3339 in UTC, as the instance's tag shows it
    traceparent: str | None = None
    tracestate: str | None = None

    def tags(self) -> dict[str, str]:
        """What the started instance keeps: `cloudevents.<attribute>` for each one present."""
        kept = {"id": self.id, "source": self.source, "type": self.type, "subject": self.subject, "time": self.time}
        return {TAG_PREFIX + name: value for name, value in kept.items() if value is not None}


def content_mode(content_type: str | None, properties: Mapping[Any, Any] | None) -> Mode | None:
    """Which content mode a message uses, or None when it is no CloudEvent (a plain message of our contract)."""
    if content_type and _media_type(content_type).startswith("application/cloudevents"):
        return "structured"
    if any(_name(key).startswith(PREFIXES) for key in (properties or {})):
        return "binary"
    return None


def check_structured_content_type(content_type: str | None) -> None:
    """Only the JSON event format, one event per message, UTF-8."""
    media = _media_type(content_type or "")
    if media == "application/cloudevents-batch+json":
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "a CloudEvents batch is not supported; send one event "
                                                          "per message")
    if media != STRUCTURED_JSON:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"event format {_quoted(media)} is not supported; "
                                                          f"expected {STRUCTURED_JSON}")
    if not _utf8(content_type or ""):
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "a structured CloudEvent must be UTF-8 JSON")


def from_structured(envelope: Any, text: str) -> tuple[CloudEvent, Any]:
    """The attributes and the data of a JSON-format envelope (`envelope`: `text` parsed strictly by the caller).

    Raises CloudEventError; the data is None when the envelope has none.
    """
    if not isinstance(envelope, dict):
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "the envelope must be a JSON object")
    _require(envelope, "the envelope")
    if "data" in envelope and "data_base64" in envelope:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "the envelope has both data and data_base64; at most one "
                                                          "is allowed")
    if "time" in envelope:
        _check_time(envelope["time"])
    datacontenttype = envelope.get("datacontenttype")
    if "data_base64" in envelope:
        if datacontenttype is None or (isinstance(datacontenttype, str) and is_json(datacontenttype)):
            raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "data_base64 with a JSON datacontenttype: JSON data "
                                                              "belongs in data, as JSON")
        raise CloudEventError(Reason.UNSUPPORTED_CONTENT_TYPE, f"data_base64 ({_quoted(datacontenttype)}) is not "
                                                               "supported; data must be JSON")
    try:
        event = JSONFormat().read(SdkCloudEvent, text)
    except (BaseCloudEventException, ValueError, TypeError, OverflowError) as error:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, _sdk_problem(error)) from None
    _check_data_content_type(event.get_datacontenttype())
    return _kept(event, "structured", time_given="time" in envelope), envelope.get("data")


def from_binary(properties: Mapping[Any, Any], content_type: str | None) -> CloudEvent:
    """The attributes of a binary-mode message (its data is the body, in `content_type`). Raises CloudEventError."""
    attributes: dict[str, Any] = {}
    separators: set[str] = set()
    for key, value in properties.items():
        name = _name(key)
        prefix = next((p for p in PREFIXES if name.startswith(p)), None)
        if prefix is None:
            continue
        separators.add(prefix[-1])
        attributes[name[len(prefix):]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(separators) > 1:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "the cloudEvents_ and cloudEvents: prefixes are mixed; "
                                                          "one message uses one separator")
    _require(attributes, "the application properties (cloudEvents_<name>)")
    if "datacontenttype" in attributes:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, "datacontenttype is the AMQP content-type in binary mode, "
                                                          "not an application property")
    if "time" in attributes:
        _check_binary_time(attributes["time"])
    prefix = PREFIXES[0] if "_" in separators else PREFIXES[1]
    message = amqp.AMQPMessage(properties={}, application_data=b"",
                               application_properties={prefix + name: value for name, value in attributes.items()})
    try:
        event = amqp.from_binary(message, JSONFormat(), SdkCloudEvent)
    except (BaseCloudEventException, ValueError, TypeError, OverflowError) as error:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, _sdk_problem(error)) from None
    _check_data_content_type(content_type)
    return _kept(event, "binary", time_given="time" in attributes)


def subject_for(event_type: str, types: Mapping[str, str]) -> str:
    """The contract's subject for a CloudEvents type (UnknownSubject naming the known types)."""
    subject = types.get(event_type)
    if subject is None:
        known = ", ".join(sorted(types))
        raise CloudEventError(Reason.UNKNOWN_SUBJECT, f"CloudEvents type {_quoted(event_type)} is not mapped to an "
                                                      f"action; known: {clip(known, 400)} (see CLOUDEVENTS_TYPES)")
    return subject


def is_json(content_type: str) -> bool:
    """`application/json` or any `+json` media type (the JSON format's rule), in UTF-8."""
    media = _media_type(content_type)
    return (media == "application/json" or media.endswith("+json")) and _utf8(content_type)


def trace_carrier(body: bytes | None, content_type: str | None, properties: Mapping[Any, Any] | None
                  ) -> dict[str, str]:
    """`traceparent`/`tracestate` of the distributed-tracing extension, wherever the message's mode puts them.

    Read only when the transport carries no trace context of its own; a body that is not a readable envelope has
    none (the contract reports what is wrong with it).
    """
    mode = content_mode(content_type, properties)
    found: dict[str, Any] = {}
    if mode == "binary":
        for key, value in (properties or {}).items():
            name = _name(key)
            for prefix in PREFIXES:
                if name in (prefix + "traceparent", prefix + "tracestate"):
                    found[name[len(prefix):]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    elif mode == "structured" and body is not None and len(body) <= MAX_TRACE_PEEK_BYTES:
        try:
            envelope = json.loads(body.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            return {}
        if isinstance(envelope, dict):
            found = {name: envelope.get(name) for name in ("traceparent", "tracestate")}
    return {name: value for name, value in found.items() if isinstance(value, str) and 0 < len(value) <= 512}


# --- writing (publishers) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """A CloudEvent as an AMQP message's parts: body, content type and application properties."""

    body: bytes
    content_type: str
    properties: dict[str, Any]


def write(mode: Mode, attributes: Mapping[str, Any], data: Any) -> Written:
    """`data` (JSON) with `attributes` (specversion, time default to 1.0 and now), in either content mode.

    The SDK writes both; in binary mode its AMQP timestamp (epoch milliseconds, an int) goes back to a datetime,
    which azure-servicebus sends as an AMQP timestamp (an int it would send as a 32-bit AMQP int).
    """
    event = SdkCloudEvent({"datacontenttype": "application/json", **attributes}, data)
    if mode == "structured":
        structured = amqp.to_structured_event(event)
        return Written(structured.application_data, str(structured.properties[amqp.CONTENT_TYPE_PROPERTY]), {})
    binary = amqp.to_binary_event(event)
    time_key = PREFIXES[0] + "time"
    properties = dict(binary.application_properties)
    if isinstance(properties.get(time_key), int):
        properties[time_key] = _EPOCH + timedelta(milliseconds=properties[time_key])
    return Written(binary.application_data, str(binary.properties[amqp.CONTENT_TYPE_PROPERTY]), properties)


# --- helpers ----------------------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _require(attributes: Mapping[str, Any], where: str) -> None:
    missing = [name for name in REQUIRED if name not in attributes]
    if missing:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"required attribute(s) {', '.join(missing)} missing from "
                                                          f"{where}")
    version = attributes["specversion"]
    if version != SPECVERSION:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"specversion {_quoted(version)} is not supported; "
                                                          f'expected "{SPECVERSION}"')


def _check_time(value: Any) -> None:
    """RFC 3339 with an offset; said here in words, before the SDK's parser says it in its own."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"time {_quoted(value)} is not an RFC 3339 timestamp with "
                                                          "an offset, e.g. 2030-01-01T09:00:00Z")


def _check_binary_time(value: Any) -> None:
    """An AMQP timestamp (the SDKs hand it over as epoch milliseconds or a datetime), or the canonical string."""
    if isinstance(value, str):
        _check_time(value)
    elif isinstance(value, bool) or not isinstance(value, int | datetime):
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"time must be an AMQP timestamp or an RFC 3339 string, "
                                                          f"got {type(value).__name__}")


def _check_data_content_type(content_type: str | None) -> None:
    if content_type is not None and not is_json(content_type):
        raise CloudEventError(Reason.UNSUPPORTED_CONTENT_TYPE, f"datacontenttype {_quoted(content_type)} is not "
                                                               "supported; data must be JSON (application/json)")


def _kept(event: BaseCloudEvent, mode: Mode, *, time_given: bool) -> CloudEvent:
    attributes = event.get_attributes()
    kept = {name: _bounded(name, attributes.get(name))
            for name in ("id", "source", "type", "subject", "traceparent", "tracestate")}
    moment = event.get_time() if time_given else None  # the SDK stamps "now" on an event that had no time
    return CloudEvent(id=str(kept["id"]), source=str(kept["source"]), type=str(kept["type"]), mode=mode,
                      subject=kept["subject"], time=_utc(moment) if moment is not None else None,
                      traceparent=kept["traceparent"], tracestate=kept["tracestate"])


def _bounded(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"attribute {name} must be a string")
    if len(value) > MAX_CLOUDEVENT_ATTRIBUTE_CHARS:
        raise CloudEventError(Reason.INVALID_CLOUD_EVENT, f"attribute {name} is {len(value)} characters; at most "
                                                          f"{MAX_CLOUDEVENT_ATTRIBUTE_CHARS} are accepted")
    return value


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sdk_problem(error: Exception) -> str:
    """The SDK's findings, one clause per attribute, without its preamble."""
    if isinstance(error, CloudEventValidationError):
        clauses = [f"{name}: {'; '.join(str(e) for e in problems)}" for name, problems in error.errors.items()]
        return clip("invalid CloudEvent: " + "; ".join(clauses), 900)
    return clip(f"invalid CloudEvent: {error}", 900)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _utf8(content_type: str) -> bool:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _name(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def _quoted(value: Any) -> str:
    return json.dumps(clip(str(value), 60))

"""The message contract: body bytes + subject + content type + message id -> typed request or rejection.

Pure code: nothing here knows about Service Bus or the Durable Task Scheduler, so every rule can be unit
tested and the caller only maps the result to one client call or one dead-letter.

The JSON Schemas in ``sbworker/core/schemas/`` are the contract that publishers read; ``parse`` validates against
those very files, so documentation and behaviour cannot drift. Rules a schema cannot express are enforced
here and stated in the schema descriptions.

Decisions (and why):

- Checks run in this order, and the first failure wins: size (``TooLarge``, before any decoding so a huge
  body costs nothing), subject, content type, UTF-8, JSON, instance id (length, then the entity prefix), schema,
  start time, orchestration registration, input size, the orchestration's own input bounds, message id, event
  data size. A message therefore gets the most basic reason that applies.
- Bounds (``sbworker.core.limits``) are checked here, before anything reaches DTS: an instance id DTS would
  refuse (``InstanceIdTooLong``), one starting with "@", which the Durable Task SDKs reserve for entity ids
  (``ReservedInstanceId``), an input or event data larger as JSON in DTS than the configured limit
  (``InputTooLarge``, ``EventTooLarge``), and what an orchestration refuses in its own input
  (``InputOutOfBounds``, e.g. workflow_with_retry's retry overrides). Each description names the limit and the
  actual size.
- Subjects match exactly and case-sensitively (``"start"``, ``"approval"``, ``"event"``) after stripping
  surrounding whitespace: whitespace is an easy publisher slip, a different case may be a different message type.
- ``event`` raises any event an orchestration declares (``sbworker.core.events``): an undeclared name is
  ``UnknownEvent`` (listing the declared ones), data that breaks the event's own schema is ``SchemaViolation`` with
  paths under ``$.data``. ``approval`` stays as the shorthand of ``event`` with ``ApprovalEvent``.
- ``content_type`` unset or blank means JSON. Otherwise the media type must be ``application/json``
  (case-insensitive); parameters are allowed, but a ``charset`` other than UTF-8 is rejected because the
  body is only ever decoded as UTF-8.
- A UTF-8 byte order mark is accepted and skipped: some tools write one, and it carries no meaning.
- JSON is strict: duplicate keys, ``NaN``/``Infinity`` literals, numbers that overflow a double (``1e400``),
  integers longer than Python's 4300-digit limit, unpaired UTF-16 surrogates (``"\\ud800"``, which cannot be
  re-encoded as UTF-8 downstream) and nesting deeper than ``MAX_DEPTH`` are all ``InvalidJson``. The depth cap
  keeps far below the interpreter's recursion limit, so serialising the input later can never blow the stack;
  bodies deep enough to make ``json`` itself raise ``RecursionError`` are reported the same way, never raised.
- Both schemas forbid unknown properties, so a typo such as ``"aproved"`` is reported by name.
- ``instance_id`` and ``start_at`` may be absent but not ``null``; ``comment`` may be ``null``; ``input``
  ``null`` and absent both mean no input.
- An absent ``instance_id`` on ``start`` defaults to the message id, so a redelivered or re-published message
  never starts a second instance. The message id must then satisfy the same rules as an explicit instance
  id; if it is missing, empty, not UTF-8 or unsuitable, the reason is ``MissingMessageId``.
- ``start_at`` must be ISO-8601 with a zone (``Z`` or an offset); a naive time is ambiguous and rejected.
- A CloudEvent (``sbworker.core.cloudevents``: structured or binary mode of the AMQP binding) is the same contract
  in another envelope: its ``type`` stands for the subject (a Service Bus subject set as well is ignored), its
  ``data`` is the body, and its ``id`` stands for the message id (the default instance id and the idempotency key).
  Order: size, envelope (``InvalidCloudEvent``), data content type, type, then the rules above on the data. The
  kept attributes ride on the request (``cloudevent``).
- Descriptions name the field as a JSON path (``$.approved``), say what was expected, quote at most a short
  prefix of any value and never exceed ``MAX_DESCRIPTION`` characters: they end up in dead-letter headers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final, NoReturn, TypeAlias

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sbworker.core import cloudevents, limits
from sbworker.core.cloudevents import CloudEvent
from sbworker.core.codes import APPROVAL_EVENT, CLOUDEVENT_TYPES, Reason
from sbworker.core.events import RESERVED_KEY, EventCatalog
from sbworker.core.limits import DEFAULT_LIMITS, Limits
from sbworker.core.schema_check import Schema
from sbworker.core.text import clip

SUBJECT_START: Final = "start"
SUBJECT_APPROVAL: Final = "approval"
SUBJECT_EVENT: Final = "event"
SUBJECTS: Final = (SUBJECT_START, SUBJECT_APPROVAL, SUBJECT_EVENT)

DEFAULT_MAX_BYTES: Final = 262144
MAX_DEPTH: Final = 100
"""Deepest allowed nesting of arrays/objects (the body object itself is level 0)."""
MAX_DESCRIPTION: Final = 1024


@dataclass(frozen=True)
class StartRequest:
    """Start ``orchestration`` as ``instance_id`` with ``input``, now or at ``start_at`` (aware UTC)."""

    orchestration: str
    instance_id: str
    input: Any
    start_at: datetime | None
    instance_id_from_message: bool
    cloudevent: CloudEvent | None = None  # the envelope it came in, if any: its attributes become tags


@dataclass(frozen=True)
class ApprovalRequest:
    """Raise the approval event on ``instance_id`` with ``event_data()``."""

    instance_id: str
    approved: bool
    approver: str
    comment: str | None
    cloudevent: CloudEvent | None = None

    @property
    def event_name(self) -> str:
        return APPROVAL_EVENT

    def event_data(self) -> dict[str, Any]:
        return {"approved": self.approved, "approver": self.approver, "comment": self.comment}


@dataclass(frozen=True)
class EventRequest:
    """Raise the declared event ``name`` with ``data`` (an object that met its schema) on ``instance_id``."""

    instance_id: str
    name: str
    data: dict[str, Any]
    cloudevent: CloudEvent | None = None

    @property
    def event_name(self) -> str:
        return self.name

    def event_data(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass(frozen=True)
class Invalid:
    """A rejected message: ``reason`` is a ``Reason`` code, ``description`` names the offending field."""

    reason: str
    description: str


Request = StartRequest | ApprovalRequest | EventRequest
#: What raises an event on an instance: an approval (the shorthand) or any declared event.
RaiseRequest = ApprovalRequest | EventRequest
#: (orchestration name, input) -> why the orchestration refuses that input, or None.
InputCheck: TypeAlias = Callable[[str, Any], str | None]


def _load_schema(name: str) -> dict[str, Any]:
    text = (resources.files("sbworker.core") / "schemas" / name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    Draft202012Validator.check_schema(schema)  # a broken schema file should fail at import, not per message
    return schema


_START_SCHEMA: Final = _load_schema("start.schema.json")
_APPROVAL_SCHEMA: Final = _load_schema("approval.schema.json")
_EVENT_SCHEMA: Final = _load_schema("event.schema.json")
_START: Final = Schema(_START_SCHEMA)
_APPROVAL: Final = Schema(_APPROVAL_SCHEMA)
_EVENT: Final = Schema(_EVENT_SCHEMA)
# The defaulted instance id obeys the same rules as an explicit one: validate it with the schema's own $def.
_INSTANCE_ID: Final = Schema(_START_SCHEMA["$defs"]["instanceId"])


class Rejected(ValueError):
    """A body the builders refuse because ``parse`` would: ``reason`` is the dead-letter reason it would give."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


class _Reject(Exception):
    """Internal: carries a rejection out of nested helpers to ``parse``."""

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def _reject(reason: Reason, description: str) -> NoReturn:
    raise _Reject(reason, description)


def parse(
    body: bytes,
    *,
    subject: str | None,
    content_type: str | None,
    message_id: str | bytes | None,
    is_registered: Callable[[str], bool],
    registered_names: Callable[[], Iterable[str]] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    events: EventCatalog | None = None,
    bounds: Limits = DEFAULT_LIMITS,
    input_problem: InputCheck | None = None,
    application_properties: Mapping[Any, Any] | None = None,
    cloudevent_types: Mapping[str, str] = CLOUDEVENT_TYPES,
) -> Request | Invalid:
    """Turn one message into a request, or an ``Invalid`` for the caller to dead-letter.

    ``events`` declares the events subject ``event`` may raise (none when absent); ``input_problem(name, input)``
    says why an orchestration refuses its input (``InputOutOfBounds``). ``application_properties`` (where a
    binary-mode CloudEvent keeps its attributes) and ``cloudevent_types`` (CloudEvents type -> subject) serve
    CloudEvents.

    Never raises because of the message's content; exceptions from the callables (caller bugs) propagate.
    """
    try:
        return _parse(
            bytes(body),
            subject=subject,
            content_type=content_type,
            message_id=message_id,
            is_registered=is_registered,
            registered_names=registered_names,
            max_bytes=max_bytes,
            events=events,
            bounds=bounds,
            input_problem=input_problem,
            application_properties=application_properties,
            cloudevent_types=cloudevent_types,
        )
    except _Reject as rejection:
        # A plain str, not the enum member: it crosses into logs and AMQP properties.
        return Invalid(rejection.reason.value, _clip(rejection.description))


def _parse(
    body: bytes,
    *,
    subject: str | None,
    content_type: str | None,
    message_id: str | bytes | None,
    is_registered: Callable[[str], bool],
    registered_names: Callable[[], Iterable[str]] | None,
    max_bytes: int,
    events: EventCatalog | None,
    bounds: Limits,
    input_problem: InputCheck | None,
    application_properties: Mapping[Any, Any] | None,
    cloudevent_types: Mapping[str, str],
) -> Request:
    if len(body) > max_bytes:
        _reject(Reason.TOO_LARGE, f"body is {len(body)} bytes; the limit is {max_bytes} bytes")
    mode = cloudevents.content_mode(content_type, application_properties)
    if mode is None:
        kind = _check_subject(subject)
        _check_content_type(content_type)
        document = _load_json(_decode(body))
        _check_instance_id(document)
        return _request(kind, document, message_id, is_registered, registered_names, events, bounds, input_problem)
    kind, document, cloudevent = _cloud_event(mode, body, content_type, application_properties or {},
                                              cloudevent_types)
    _check_instance_id(document)
    try:
        request = _request(kind, document, cloudevent.id, is_registered, registered_names, events, bounds,
                           input_problem)
    except _Reject as rejection:
        if rejection.reason in (Reason.MISSING_MESSAGE_ID, Reason.INSTANCE_ID_TOO_LONG, Reason.RESERVED_INSTANCE_ID):
            # the CloudEvents id stood in for the message id
            _reject(rejection.reason, rejection.description.replace("message_id", "CloudEvents id"))
        raise
    return replace(request, cloudevent=cloudevent)


def _request(kind: str, document: Any, message_id: str | bytes | None, is_registered: Callable[[str], bool],
             registered_names: Callable[[], Iterable[str]] | None, events: EventCatalog | None, bounds: Limits,
             input_problem: InputCheck | None) -> Request:
    if kind == SUBJECT_START:
        return _start(document, message_id, is_registered, registered_names, bounds, input_problem)
    raised: RaiseRequest = _event(document, events) if kind == SUBJECT_EVENT else _approval(document)
    _check_event(raised, message_id, bounds)
    return raised


def _check_instance_id(document: Any) -> None:
    """Before the schema, so an id DTS would refuse, or an entity's, gets its own reason rather than a schema
    clause."""
    instance_id = document.get("instance_id") if isinstance(document, dict) else None
    if isinstance(instance_id, str):
        _check_id(instance_id, "$.instance_id")


def _check_id(instance_id: str, what: str, prefix: str = "") -> None:
    problem = limits.instance_id_problem(instance_id, what)
    if problem is not None:
        _reject(Reason.INSTANCE_ID_TOO_LONG, prefix + problem)
    problem = limits.reserved_id_problem(instance_id, what)
    if problem is not None:
        _reject(Reason.RESERVED_INSTANCE_ID, prefix + problem)


def _check_input(name: str, value: Any, bounds: Limits, input_problem: InputCheck | None) -> None:
    problem = limits.input_problem(value, bounds)
    if problem is not None:
        _reject(Reason.INPUT_TOO_LARGE, problem)
    problem = input_problem(name, value) if input_problem is not None else None
    if problem is not None:
        _reject(Reason.INPUT_OUT_OF_BOUNDS, f"{problem} ({name})")


def _check_event(request: RaiseRequest, message_id: str | bytes | None, bounds: Limits) -> None:
    """The event data as the listener raises it (tagged with the message id) within MAX_EVENT_BYTES."""
    data: dict[str, Any] = request.event_data()
    if message_id:
        data[RESERVED_KEY] = (message_id.decode("utf-8", "replace") if isinstance(message_id, bytes)
                              else str(message_id))
    problem = limits.event_problem(data, bounds, f"the data of event {request.event_name}")
    if problem is not None:
        _reject(Reason.EVENT_TOO_LARGE, problem)


def _cloud_event(mode: cloudevents.Mode, body: bytes, content_type: str | None, properties: Mapping[Any, Any],
                 types: Mapping[str, str]) -> tuple[str, Any, CloudEvent]:
    """The subject its type maps to, the data (parsed as a body is) and the kept attributes of a CloudEvent."""
    try:
        if mode == "structured":
            cloudevents.check_structured_content_type(content_type)
            text = _decode(body)
            envelope = _load_json(text, max_depth=MAX_DEPTH + 1)  # the data nests one level below the envelope
            event, data = cloudevents.from_structured(envelope, text)
            kind = cloudevents.subject_for(event.type, types)
            if "data" not in envelope:
                _reject(Reason.SCHEMA_VIOLATION, "$.data: missing; the CloudEvent's data carries the message body")
            return kind, data, event
        event = cloudevents.from_binary(properties, content_type)
        kind = cloudevents.subject_for(event.type, types)
    except cloudevents.CloudEventError as error:
        _reject(error.reason, error.description)
    return kind, _load_json(_decode(body)), event


def _check_subject(subject: str | None) -> str:
    expected = f'expected "{SUBJECT_START}", "{SUBJECT_APPROVAL}" or "{SUBJECT_EVENT}" (case-sensitive)'
    if subject is None or not isinstance(subject, str) or not subject.strip():
        _reject(Reason.UNKNOWN_SUBJECT, f"subject is missing; {expected}")
    stripped = subject.strip()
    if stripped not in SUBJECTS:
        _reject(Reason.UNKNOWN_SUBJECT, f"subject {_show(subject)} is not known; {expected}")
    return stripped


def _check_content_type(content_type: str | None) -> None:
    if content_type is None or not content_type.strip():
        return
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        _reject(
            Reason.UNSUPPORTED_CONTENT_TYPE,
            f"content_type {_show(content_type)} is not supported; expected application/json",
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            _reject(
                Reason.UNSUPPORTED_CONTENT_TYPE,
                f"content_type {_show(content_type)} is not supported; the body must be UTF-8",
            )


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # utf-8-sig reports positions after a stripped BOM; report them as offsets into the body.
        offset = error.start + len(body) - len(error.object)
        _reject(
            Reason.INVALID_ENCODING,
            f"body is not valid UTF-8: byte 0x{body[offset]:02x} at offset {offset} ({error.reason})",
        )


class _DuplicateKeyObject(dict[str, Any]):
    """An object that had a repeated key; reported with its path by ``_check_value``."""

    duplicate: str


@dataclass(frozen=True)
class _NonFinite:
    """Placeholder for NaN, Infinity or an overflowing number; reported with its path by ``_check_value``."""

    literal: str


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            marked = _DuplicateKeyObject(result)
            marked.duplicate = key
            return marked
        result[key] = value
    return result


def _parse_float(literal: str) -> float | _NonFinite:
    number = float(literal)
    return number if math.isfinite(number) else _NonFinite(literal)


# Built once: json.loads with hooks builds a decoder per call (more than half of its cost for a small body). A
# decoder keeps nothing from one document to the next, so it may be shared.
_DECODER: Final = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_float=_parse_float,
                                   parse_constant=_NonFinite)


def _load_json(text: str, max_depth: int = MAX_DEPTH) -> Any:
    if not text.strip():
        _reject(Reason.INVALID_JSON, "body is empty; expected a JSON object")
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        _reject(Reason.INVALID_JSON, f"body is nested too deeply to parse; at most {MAX_DEPTH} levels allowed")
    except json.JSONDecodeError as error:
        _reject(Reason.INVALID_JSON, f"body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}")
    except ValueError as error:  # e.g. an integer beyond Python's digit limit
        _reject(Reason.INVALID_JSON, f"body is not valid JSON: {clip(str(error), 200)}")
    _check_value(document, max_depth)
    return document


# A path is a linked list (parent, segment) so walking a large document costs O(1) per node.
_Path: TypeAlias = tuple["_Path", str | int] | None

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _check_value(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Reject what JSON parsing let through but no JSON consumer downstream can handle.

    Iterative, not recursive: the point is to survive adversarial nesting. Also rejects non-JSON Python
    values, which only ``start_body``/``approval_body`` callers can supply.
    """
    stack: list[tuple[Any, _Path, int]] = [(value, None, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            _reject(Reason.INVALID_JSON, f"{_render(path)}: nested deeper than {MAX_DEPTH} levels")
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                _reject(Reason.INVALID_JSON, f"{_render(path)}: {item} is not allowed; expected a finite number")
        elif isinstance(item, _NonFinite):
            literal = clip(item.literal, 40)
            _reject(Reason.INVALID_JSON, f"{_render(path)}: {literal} is not allowed; expected a finite number")
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                _reject(Reason.INVALID_JSON, f"{_render(path)}: string contains an unpaired UTF-16 surrogate")
        elif isinstance(item, dict):
            if isinstance(item, _DuplicateKeyObject):
                where = _render((path, item.duplicate))
                _reject(Reason.INVALID_JSON, f"{where}: duplicate key; each key may appear only once")
            for key, child in item.items():
                if not isinstance(key, str):
                    _reject(Reason.INVALID_JSON, f"{_render(path)}: object key {key!r} is not a string")
                if _SURROGATE.search(key):
                    where = _render((path, key))
                    _reject(Reason.INVALID_JSON, f"{where}: key contains an unpaired UTF-16 surrogate")
                stack.append((child, (path, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, (path, index), depth + 1) for index, child in enumerate(item))
        else:
            _reject(Reason.INVALID_JSON, f"{_render(path)}: {type(item).__name__} is not a JSON value")


def _start(
    document: Any,
    message_id: str | bytes | None,
    is_registered: Callable[[str], bool],
    registered_names: Callable[[], Iterable[str]] | None,
    bounds: Limits,
    input_problem: InputCheck | None,
) -> StartRequest:
    _validate(_START, document)
    start_at = _parse_start_at(document["start_at"]) if "start_at" in document else None
    name: str = document["orchestration"]
    if not is_registered(name):
        _reject(
            Reason.UNKNOWN_ORCHESTRATION,
            f"$.orchestration: {_show(name)} is not registered; {_names(registered_names)}",
        )
    _check_input(name, document.get("input"), bounds, input_problem)
    if "instance_id" in document:
        return StartRequest(name, document["instance_id"], document.get("input"), start_at, False)
    return StartRequest(name, _instance_id_from(message_id), document.get("input"), start_at, True)


def _approval(document: Any) -> ApprovalRequest:
    _validate(_APPROVAL, document)
    return ApprovalRequest(
        instance_id=document["instance_id"],
        approved=document["approved"],
        approver=document["approver"],
        comment=document.get("comment"),
    )


def _event(document: Any, events: EventCatalog | None) -> EventRequest:
    _validate(_EVENT, document)
    name: str = document["name"]
    declared = events.get(name) if events is not None else None
    if declared is None:
        known = events.names() if events is not None else []
        listing = "declared: " + clip(", ".join(known), 600) if known else "no events are declared"
        _reject(Reason.UNKNOWN_EVENT, f"$.name: {_show(name)} is not a declared event; {listing}")
    data = document["data"]
    _check_event_data(declared.schema_check, data, "$.data")
    return EventRequest(document["instance_id"], name, data)


def _check_event_data(schema: Schema, data: Any, root: str) -> None:
    problems = _describe_all(schema.errors(data), root=root)
    if problems:
        _reject(Reason.SCHEMA_VIOLATION, problems)
    if RESERVED_KEY in data:  # the schema made sure it is an object
        _reject(Reason.SCHEMA_VIOLATION, f"{root}.{RESERVED_KEY}: reserved; the listener sets it to the message's id")


def _parse_start_at(text: str) -> datetime:
    example = "expected ISO-8601 with a time zone, e.g. 2030-01-01T09:00:00Z"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _reject(Reason.SCHEMA_VIOLATION, f"$.start_at: {_show(text)} is not a timestamp; {example}")
    if moment.utcoffset() is None:
        _reject(Reason.SCHEMA_VIOLATION, f"$.start_at: {_show(text)} has no time zone; {example}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        _reject(Reason.SCHEMA_VIOLATION, f"$.start_at: {_show(text)} is out of range in UTC")


def _names(registered_names: Callable[[], Iterable[str]] | None) -> str:
    if registered_names is None:
        return "the registered names are not available"
    names = sorted(str(name) for name in registered_names())
    if not names:
        return "no orchestrations are registered"
    return "registered: " + clip(", ".join(names), 600)


def _instance_id_from(message_id: str | bytes | None) -> str:
    absent = "$.instance_id is absent, so it defaults to the message_id"
    if isinstance(message_id, bytes):
        try:
            message_id = message_id.decode("utf-8")
        except UnicodeDecodeError:
            _reject(Reason.MISSING_MESSAGE_ID, f"{absent}, but the message_id is not valid UTF-8")
    elif message_id is not None and not isinstance(message_id, str):
        message_id = str(message_id)  # e.g. uuid.UUID from the SDK
    if not message_id:
        _reject(Reason.MISSING_MESSAGE_ID, f"{absent}, but the message has no message_id")
    _check_id(message_id, "the message_id", f"{absent}, but ")
    problems = _describe_all(_INSTANCE_ID.errors(message_id), root="message_id")
    if problems:
        _reject(Reason.MISSING_MESSAGE_ID, f"{absent}, but it is not a usable instance id: {problems}")
    return message_id


def _validate(schema: Schema, document: Any) -> None:
    try:
        problems = _describe_all(schema.errors(document))
    except RecursionError:  # unreachable after the depth check; kept so parse can never crash
        _reject(Reason.INVALID_JSON, f"body is nested too deeply; at most {MAX_DEPTH} levels allowed")
    if problems:
        _reject(Reason.SCHEMA_VIOLATION, problems)


_MAX_PROBLEMS: Final = 5


def _describe_all(errors: Iterable[ValidationError], root: str = "$") -> str:
    """Schema problems in a stable order, one clause per field: a typo shows as unexpected + missing."""
    ordered = sorted(errors, key=lambda e: ([str(p) for p in e.absolute_path], _KEYWORD_ORDER.get(str(e.validator), 9)))
    lines: list[str] = []
    seen_paths: set[str] = set()
    for error in ordered:
        for path, problem in _describe(error, root):
            if path not in seen_paths:  # "" fails minLength and "only whitespace": the first says enough
                seen_paths.add(path)
                lines.append(f"{path}: {problem}")
    shown = "; ".join(lines[:_MAX_PROBLEMS])
    hidden = len(lines) - _MAX_PROBLEMS
    return shown + (f" (and {hidden} more)" if hidden > 0 else "")


# Most basic problem first: wrong kind of value, then wrong length, then content.
_KEYWORD_ORDER: Final = {"additionalProperties": 0, "required": 0, "type": 1, "minLength": 2, "maxLength": 2}


def _describe(error: ValidationError, root: str) -> list[tuple[str, str]]:
    """(path, problem) pairs for one jsonschema error, worded for a publisher rather than a schema author."""
    path = _render_segments(list(error.absolute_path), root)
    keyword = error.validator
    expected: Any = error.validator_value
    instance: Any = error.instance
    schema: Any = error.schema
    if keyword == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(key for key in instance if key not in allowed)
        child = [*error.absolute_path]
        return [
            (_render_segments([*child, key], root), f"unexpected property; allowed: {', '.join(allowed)}")
            for key in extras
        ]
    if keyword == "required":
        child = [*error.absolute_path]
        return [
            (_render_segments([*child, key], root), "required property is missing")
            for key in expected
            if key not in instance
        ]
    if keyword == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else str(expected)
        got = _json_type(instance)
        shown = _show(instance) if got in ("string", "number", "boolean") else ""
        return [(path, f"expected {wanted}, got {got} {shown}".rstrip())]
    if keyword == "minLength":
        return [(path, "must not be empty" if expected == 1 else f"must be at least {expected} characters")]
    if keyword == "maxLength":
        return [(path, f"must be at most {expected} characters, got {len(instance)}")]
    if keyword in ("not", "pattern") and "description" in schema:
        # The schema carries the human wording for its own constraints (see $defs/instanceId).
        return [(path, str(schema["description"]))]
    return [(path, clip(error.message, 200))]


_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _render(path: _Path) -> str:
    segments: list[str | int] = []
    while path is not None:
        path, segment = path
        segments.append(segment)
    return _render_segments(segments[::-1])


def _render_segments(segments: Sequence[str | int], root: str = "$") -> str:
    parts = [root]
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _IDENTIFIER.fullmatch(segment) and len(segment) <= 64:
            parts.append(f".{segment}")
        else:
            parts.append(f"[{_show(segment)}]")
    text = "".join(parts)
    return text if len(text) <= 300 else f"{root}…{text[-250:]}"  # the innermost part is the informative one


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: Any) -> str:
    """A short, log-safe rendering of a scalar (ASCII, escaped); containers are not echoed."""
    if isinstance(value, str):
        return json.dumps(value[:60]) + ("…" if len(value) > 60 else "")
    if value is None or isinstance(value, bool | float):
        return json.dumps(value)
    if isinstance(value, int):
        return clip(str(value), 40)
    return ""


def _clip(description: str) -> str:
    return clip(description, MAX_DESCRIPTION)


# --- building bodies (publisher side) --------------------------------------------------------------------


def start_body(
    orchestration: str, input: Any = None, instance_id: str | None = None, start_at: datetime | None = None,
    *, bounds: Limits = DEFAULT_LIMITS, input_problem: InputCheck | None = None,
) -> dict[str, Any]:
    """A ``start`` body that ``parse`` accepts (registration aside); raises ``ValueError`` otherwise.

    ``None`` arguments are omitted. ``start_at`` must be timezone-aware; it is written in UTC with ``Z``.
    """
    body: dict[str, Any] = {"orchestration": orchestration}
    if input is not None:
        body["input"] = input
    if instance_id is not None:
        body["instance_id"] = instance_id
    if start_at is not None:
        try:
            body["start_at"] = _format_utc(start_at)
        except ValueError as error:
            raise Rejected(Reason.SCHEMA_VIOLATION.value, str(error)) from None
    _check_body(_START, body, lambda: _check_input(orchestration, input, bounds, input_problem))
    return body


# Room for the message id the listener adds to raised event data: the Service Bus SDKs send at most 128 characters.
_LONGEST_MESSAGE_ID: Final = "m" * 128


def approval_body(instance_id: str, approved: bool, approver: str, comment: str | None = None,
                  *, bounds: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """An ``approval`` body that ``parse`` accepts; raises ``ValueError`` otherwise. ``comment=None`` is omitted."""
    body: dict[str, Any] = {"instance_id": instance_id, "approved": approved, "approver": approver}
    if comment is not None:
        body["comment"] = comment
    request = ApprovalRequest(instance_id, approved, approver, comment)
    _check_body(_APPROVAL, body, lambda: _check_event(request, _LONGEST_MESSAGE_ID, bounds))
    return body


def event_body(instance_id: str, name: str, data: Any, events: EventCatalog, *, bounds: Limits = DEFAULT_LIMITS
               ) -> dict[str, Any]:
    """An ``event`` body that ``parse`` accepts with ``events``; raises ``ValueError`` naming the problem otherwise."""
    body: dict[str, Any] = {"instance_id": instance_id, "name": name, "data": data}
    try:
        _check_value(body)
        _check_instance_id(body)
        _check_event(_event(body, events), _LONGEST_MESSAGE_ID, bounds)
    except _Reject as rejection:
        raise Rejected(rejection.reason.value, _clip(rejection.description)) from None
    return body


def check_event_data(data: Any, bounds: Limits = DEFAULT_LIMITS) -> None:
    """Raise ``ValueError`` naming the limit when ``data`` is larger as JSON than events may be (MAX_EVENT_BYTES)."""
    problem = limits.event_problem(data, bounds)
    if problem is not None:
        raise ValueError(problem)


def _format_utc(moment: datetime) -> str:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"start_at must be a timezone-aware datetime, got {moment!r}")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError as error:
        raise ValueError(f"start_at {moment!r} is out of range in UTC") from error
    return utc.isoformat().removesuffix("+00:00") + "Z"


def _check_body(schema: Schema, body: dict[str, Any], bounds: Callable[[], None]) -> None:
    try:
        _check_value(body)
        _check_instance_id(body)
        _validate(schema, body)
        bounds()
    except _Reject as rejection:
        raise Rejected(rejection.reason.value, _clip(rejection.description)) from None

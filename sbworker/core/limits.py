"""The bounds a message keeps before anything reaches DTS: instance id length, input size, event data size.

Sizes are measured as DTS will hold them: the UTF-8 bytes of the JSON the durabletask SDK writes
(`JsonDataConverter`), not the bytes of the Service Bus body. The SDK escapes every non-ASCII character and adds
a space after each separator, so a 160 KB body of "é" becomes 480 KB in DTS: the body cap (MAX_MESSAGE_BYTES)
alone does not bound what lands in an orchestration's history.

Why these defaults (README "Limits"; sources in the README and in the team's DTS notes):
- DTS keeps a payload (an input, an output, event data) under about 1 MiB; larger ones need the SDK's
  large-payload externalisation. An input of at most 512 KiB keeps half of that free, and a history holding the
  input twice (approval_workflow hands it to one activity) stays far below the 4 MiB a worker receives at once.
- Event data: an approval is at most about 27 KB by the schema; 64 KiB per event lets a waiting instance take
  dozens of events raised by hand before its history nears a work item's limit.
- Instance ids: DTS refuses ids longer than 100 characters ("Durable Task Scheduler", Limitations and
  considerations, learn.microsoft.com), so the contract does too, rather than dead-ending such a start in DTS.
  An id starting with "@" is an entity's ("@name@key"): the Durable Task SDKs reserve that prefix for entities
  (durabletask-dotnet `Check.NotEntity`: "Instance IDs starting with '@' are reserved for entities";
  durabletask-python `EntityInstanceId.parse` and `send_event`), so an orchestration given one would share the
  entities' namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from durabletask.serialization import JsonDataConverter

MAX_INSTANCE_ID_LENGTH: Final = 100
#: The prefix of every entity id ("@name@key"); an orchestration's instance id must not start with it.
ENTITY_ID_PREFIX: Final = "@"
DEFAULT_MAX_INPUT_BYTES: Final = 512 * 1024
DEFAULT_MAX_EVENT_BYTES: Final = 64 * 1024
#: DTS's own ceiling for one payload; beyond it only large-payload storage helps.
DTS_PAYLOAD_BYTES: Final = 1024 * 1024
#: The longest CloudEvents attribute string (id, source, type, ...) accepted: they are kept on the instance as tags
#: and in logs. Also the longest type CLOUDEVENTS_TYPES may name.
MAX_CLOUDEVENT_ATTRIBUTE_CHARS: Final = 1024

_CONVERTER: Final = JsonDataConverter()


@dataclass(frozen=True)
class Limits:
    """The configurable bounds (MAX_INPUT_BYTES, MAX_EVENT_BYTES); the instance id limit is DTS's and fixed."""

    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES


DEFAULT_LIMITS: Final = Limits()


def serialized_size(value: Any) -> int:
    """Bytes of `value` as the SDK sends it to DTS (0 for no value)."""
    text = _CONVERTER.serialize(value)
    return 0 if text is None else len(text.encode("utf-8"))


def instance_id_problem(instance_id: str, what: str = "instance_id") -> str | None:
    """Why DTS would refuse this id, naming the limit and the length; None if it is short enough."""
    if len(instance_id) <= MAX_INSTANCE_ID_LENGTH:
        return None
    return (f"{what} is {len(instance_id)} characters; the limit is {MAX_INSTANCE_ID_LENGTH} characters "
            "(the Durable Task Scheduler's)")


def reserved_id_problem(instance_id: str, what: str = "instance_id") -> str | None:
    """Why this id belongs to the entities' namespace, naming the rule; None if an orchestration may have it."""
    if not instance_id.startswith(ENTITY_ID_PREFIX):
        return None
    return (f"{what} starts with '{ENTITY_ID_PREFIX}', which the Durable Task SDKs reserve for entity ids "
            f"('@name@key'): an orchestration's instance id must not start with '{ENTITY_ID_PREFIX}'")


def input_problem(value: Any, limits: Limits) -> str | None:
    return _size_problem("$.input", value, limits.max_input_bytes, "MAX_INPUT_BYTES")


def event_problem(value: Any, limits: Limits, what: str = "event data") -> str | None:
    return _size_problem(what, value, limits.max_event_bytes, "MAX_EVENT_BYTES")


def _size_problem(what: str, value: Any, limit: int, setting: str) -> str | None:
    size = serialized_size(value)
    if size <= limit:
        return None
    return f"{what} is {size:,} bytes as JSON in DTS; the limit is {limit:,} bytes ({setting})"

"""Declared external events: which events an orchestration waits for, and the JSON Schema of each one's data.

The workflows declare them (orchestrations/events.py); the contract checks a message's event against the
declaration before anything reaches DTS, the dispatcher refuses an event the target instance's orchestration never
waits for, and the AsyncAPI document publishes the same schemas. Pure code, no SDK.

Decisions (and why):

- An event name means one thing everywhere: two orchestrations that wait for the same name share its schema. A
  message names the event and the instance, not the orchestration, so the data can only be checked before the
  instance is read if the name alone fixes the schema.
- Event data is a JSON object, and ``message_id`` is reserved in it: the listener adds the message's idempotency key
  there, so that a redelivered message recognises its own earlier raise in the instance's history (and a workflow
  that counts events can skip one it already counted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from jsonschema import Draft202012Validator

from sbworker.core.schema_check import Schema

#: The key the listener adds to every raised event's data (and that a publisher may not set).
RESERVED_KEY: Final = "message_id"
#: Longest event name: DTS keeps names in its history; the schemas of the contract say the same.
MAX_NAME_LENGTH: Final = 256


@dataclass(frozen=True)
class EventType:
    """One external event: its name and the JSON Schema (draft 2020-12) its data must satisfy."""

    name: str
    schema: dict[str, Any]  # never changed after loading: the validator holds it
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)
    schema_check: Schema = field(init=False, repr=False, compare=False)  # the validator, a compiled check first

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_NAME_LENGTH or self.name != self.name.strip():
            raise ValueError(f"event name {self.name!r}: 1-{MAX_NAME_LENGTH} characters, no surrounding whitespace")
        Draft202012Validator.check_schema(self.schema)
        if self.schema.get("type") != "object":
            raise ValueError(f"event {self.name}: its data schema must be of type object (the listener adds "
                             f"{RESERVED_KEY!r} to the data)")
        if RESERVED_KEY in self.schema.get("properties", {}):
            raise ValueError(f"event {self.name}: {RESERVED_KEY!r} is reserved for the listener")
        checked = Schema(self.schema)
        object.__setattr__(self, "validator", checked.validator)
        object.__setattr__(self, "schema_check", checked)

    @classmethod
    def from_package(cls, name: str, package: str, filename: str) -> EventType:
        """The schema read from a JSON file shipped inside `package` (the file publishers read, too)."""
        text = (resources.files(package) / filename).read_text(encoding="utf-8")
        schema: dict[str, Any] = json.loads(text)
        return cls(name, schema)


class EventCatalog:
    """Which orchestration waits for which events, with one schema per event name."""

    def __init__(self, waits_for: Mapping[str, Iterable[EventType]]) -> None:
        self._by_name: dict[str, EventType] = {}
        self._waits_for: dict[str, tuple[str, ...]] = {}
        for orchestration, events in waits_for.items():
            names: list[str] = []
            for event in events:
                known = self._by_name.setdefault(event.name, event)
                if known.schema != event.schema:
                    raise ValueError(f"event {event.name} is declared twice with different schemas")
                names.append(event.name)
            self._waits_for[orchestration] = tuple(sorted(set(names)))

    def get(self, name: str) -> EventType | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Every declared event name, sorted."""
        return sorted(self._by_name)

    def awaits(self, orchestration: str | None, event: str) -> bool:
        """Does an instance of `orchestration` wait for `event`?"""
        return orchestration is not None and event in self._waits_for.get(orchestration, ())

    def events_of(self, orchestration: str | None) -> tuple[str, ...]:
        """The events `orchestration` waits for (none for an unknown name)."""
        return self._waits_for.get(orchestration or "", ())

    def orchestrations_awaiting(self, event: str) -> list[str]:
        return sorted(name for name, events in self._waits_for.items() if event in events)


EMPTY: Final = EventCatalog({})

"""A yes/no check compiled from a JSON Schema: True exactly when jsonschema's Draft202012Validator finds no error.

Validating every message with jsonschema was a sixth of the listener's CPU from a backlog (py-spy, 2026-12-06):
its generic keyword dispatch and `$ref` resolution run per message, although the contract's schemas use a handful
of keywords. `compile_check` turns a schema into nested closures for exactly those keywords. A schema using any
keyword it does not know, or a `$ref` outside `#/$defs/`, compiles to None, and the caller keeps asking
jsonschema. jsonschema still words every rejection: this check only spares it the messages that have nothing to
reject. tests/unit/test_schema_check.py holds the two to the same verdict on generated documents.

Not fastjsonschema (tried 2026-12-06): it was 3.3 against 7.2 µs per valid start message, about 1% of the
listener's CPU per message, but it stops at draft 7, where a `$ref` hides its sibling keywords and `prefixItems` or
`dependentRequired` mean nothing, so it accepts documents that draft 2020-12 rejects (an event's declared schema
may use any of them); it also fetches a remote `$ref` over the network when compiling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

Check = Callable[[Any], bool]

# Keywords that never make an instance invalid (format is an annotation in draft 2020-12 unless a format checker
# is given, and the contract's validators are built without one).
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "examples", "default",
                          "format", "deprecated", "readOnly", "writeOnly"})
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


class _Unsupported(Exception):
    pass


def compile_check(schema: Any) -> Check | None:
    """The check for `schema`, or None when it uses something this module does not compile."""
    try:
        return _Compiler(schema).compile(schema)
    except _Unsupported:
        return None


class Schema:
    """A JSON Schema's validator with the compiled check in front of it."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.validator = Draft202012Validator(schema)
        self._check = compile_check(schema)

    def errors(self, instance: Any) -> Iterable[ValidationError]:
        """What jsonschema finds wrong with `instance`: nothing, at once, when the compiled check passes."""
        if self._check is not None and self._check(instance):
            return ()
        return self.validator.iter_errors(instance)


def _is_type(value: Any, name: str) -> bool:
    """jsonschema's default type checker for draft 2020-12."""
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "number":
        return isinstance(value, int | float)
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    raise _Unsupported(name)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _all(checks: list[Check]) -> Check:
    """One check that passes when every one of `checks` does (a plain loop: the check runs for every message, and a
    generator per call cost more than the checks themselves)."""
    if not checks:
        return lambda _value: True
    if len(checks) == 1:
        return checks[0]
    every = tuple(checks)

    def check(value: Any) -> bool:
        for each in every:  # noqa: SIM110 - all() over a generator is what this replaces
            if not each(value):
                return False
        return True
    return check


class _Compiler:
    def __init__(self, root: Any) -> None:
        self._root = root
        self._refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda _value: True
        if schema is False:
            return lambda _value: False
        if not isinstance(schema, Mapping):
            raise _Unsupported("schema")
        checks: list[Check] = []
        for keyword, argument in schema.items():
            if keyword in _ANNOTATIONS or keyword in ("properties", "additionalProperties"):
                continue
            checks.append(self._keyword(keyword, argument, schema))
        if "properties" in schema or "additionalProperties" in schema:
            checks.append(self._object(schema.get("properties", {}), schema.get("additionalProperties", True)))
        return _all(checks)

    def _keyword(self, keyword: str, argument: Any, schema: Mapping[str, Any]) -> Check:
        if keyword == "type":
            names = tuple(argument) if isinstance(argument, list) else (argument,)
            for name in names:
                _is_type(None, name)  # an unknown type name is not ours to judge
            if len(names) == 1:
                only = names[0]
                return lambda value: _is_type(value, only)
            return lambda value: any(_is_type(value, name) for name in names)
        if keyword == "minLength":
            low = int(argument)
            return lambda value: not isinstance(value, str) or len(value) >= low
        if keyword == "maxLength":
            high = int(argument)
            return lambda value: not isinstance(value, str) or len(value) <= high
        if keyword == "pattern":
            search = re.compile(argument).search  # jsonschema also searches, unanchored
            return lambda value: not isinstance(value, str) or search(value) is not None
        if keyword in _NUMERIC:
            if not _number(argument):
                raise _Unsupported(keyword)
            bound = argument
            compare: Callable[[Any], bool] = {
                "minimum": lambda v: v >= bound, "maximum": lambda v: v <= bound,
                "exclusiveMinimum": lambda v: v > bound, "exclusiveMaximum": lambda v: v < bound,
            }[keyword]
            return lambda value: not _number(value) or compare(value)
        if keyword == "required":
            names = tuple(argument)
            return lambda value: not isinstance(value, dict) or all(name in value for name in names)
        if keyword == "allOf":
            return _all([self.compile(part) for part in argument])
        if keyword == "anyOf":
            parts = tuple(self.compile(part) for part in argument)
            return lambda value: any(part(value) for part in parts)
        if keyword == "not":
            inner = self.compile(argument)
            return lambda value: not inner(value)
        if keyword == "$ref":
            return self._ref(argument)
        raise _Unsupported(keyword)

    def _object(self, properties: Mapping[str, Any], additional: Any) -> Check:
        known = {name: self.compile(sub) for name, sub in properties.items()}
        extra = self.compile(additional)

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for key, item in value.items():
                inner = known.get(key)
                if not (inner(item) if inner is not None else extra(item)):
                    return False
            return True

        return check

    def _ref(self, ref: Any) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/") or "/" in ref[len("#/$defs/"):]:
            raise _Unsupported("$ref")
        name = ref[len("#/$defs/"):]
        if name not in self._refs:
            definitions = self._root.get("$defs", {}) if isinstance(self._root, Mapping) else {}
            if name not in definitions or "~" in name or "%" in name:
                raise _Unsupported("$ref")
            compiled: list[Check] = []
            self._refs[name] = lambda value: compiled[0](value)  # a definition may refer to itself
            compiled.append(self.compile(definitions[name]))
        return self._refs[name]

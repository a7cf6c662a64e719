"""Subscription rule filters: SQL filters (the SQL-92 subset Service Bus documents) and correlation filters.

A filter is compiled once, at start-up, into a function of a :class:`MessageView`; a rule localbus cannot run is
a :class:`FilterError` naming it, so a config never loads with a filter silently ignored.

SQL semantics follow "Subscription Rule SQL Filter Syntax": ``sys.`` names message properties (case-insensitive),
``user.`` or no scope names application properties; a missing user property is *unknown*, which makes
comparisons, ``IN`` and ``LIKE`` unknown, and logic is three-valued; a rule matches only when its filter is true.
Supported: comparison (``= <> != > >= < <=``), ``AND OR NOT``, ``[NOT] IN (...)``, ``IS [NOT] NULL``,
``EXISTS(...)``, ``[NOT] LIKE 'pattern' [ESCAPE 'c']``, parentheses, string/number/boolean/NULL constants.
Not supported (refused at start-up): arithmetic, functions (``newid()``, ``property()``), rule actions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

UNKNOWN: Any = None  # three-valued logic: True, False, or unknown (None)

# Service Bus message properties a filter may name with sys., lower-cased → MessageView.system key.
SYSTEM_PROPERTIES = {
    "messageid": "message_id", "correlationid": "correlation_id", "to": "to", "replyto": "reply_to",
    "label": "subject", "subject": "subject", "sessionid": "session_id", "replytosessionid": "reply_to_session_id",
    "contenttype": "content_type",
}


class FilterError(ValueError):
    """A rule localbus cannot evaluate, with the reason (one line)."""


@dataclass
class MessageView:
    """What filters read of a message: system properties (by MessageView key) and application properties."""

    system: dict[str, Any] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)


Predicate = Callable[[MessageView], Any]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
    | (?P<string>'(?:[^']|'')*')
    | (?P<delimited>\[[^\]]*\]|"(?:[^"]|"")*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><>|!=|>=|<=|=|>|<|\(|\)|,|\.|[-+*/%])
    )""", re.VERBOSE)
KEYWORDS = {"and", "or", "not", "in", "is", "null", "like", "escape", "exists", "true", "false"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"unexpected character {text[pos:].strip()[:1]!r} at position {pos}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value.lower() in KEYWORDS:
            kind, value = "kw", value.lower()
        out.append((kind, value))
        pos = match.end()
    out.append(("end", ""))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.i += 1
        return token

    def accept(self, kind: str, value: str | None = None) -> bool:
        k, v = self.peek()
        if k == kind and (value is None or v == value):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: str) -> None:
        if not self.accept(kind, value):
            raise FilterError(f"expected {value!r}, found {self.peek()[1] or 'end of expression'!r}")

    # predicate := or
    def predicate(self) -> Predicate:
        left = self.conjunction()
        while self.accept("kw", "or"):
            right = self.conjunction()
            left = _or(left, right)
        return left

    def conjunction(self) -> Predicate:
        left = self.negation()
        while self.accept("kw", "and"):
            right = self.negation()
            left = _and(left, right)
        return left

    def negation(self) -> Predicate:
        if self.accept("kw", "not"):
            inner = self.negation()
            return lambda m: None if (v := inner(m)) is None else not v
        return self.primary()

    def primary(self) -> Predicate:
        if self.accept("kw", "exists"):
            self.expect("op", "(")
            getter, _ = self.property_ref()
            self.expect("op", ")")
            return lambda m: getter(m) is not _MISSING
        if self.peek() == ("op", "(") and self._parenthesised_predicate():
            self.take()
            inner = self.predicate()
            self.expect("op", ")")
            return inner
        left = self.operand()
        kind, value = self.peek()
        if kind == "op" and value in ("=", "<>", "!=", ">", ">=", "<", "<="):
            self.take()
            right = self.operand()
            return _compare(value, left, right)
        negate = self.accept("kw", "not")
        if self.accept("kw", "in"):
            self.expect("op", "(")
            options = [self.operand()]
            while self.accept("op", ","):
                options.append(self.operand())
            self.expect("op", ")")
            return _maybe_not(_in(left, options), negate)
        if self.accept("kw", "like"):
            pattern = self.string_constant()
            escape = self.string_constant() if self.accept("kw", "escape") else None
            return _maybe_not(_like(left, pattern, escape), negate)
        if not negate and self.accept("kw", "is"):
            is_not = self.accept("kw", "not")
            self.expect("kw", "null")
            return lambda m: (_value(left(m)) is not None) == is_not
        if negate:
            raise FilterError(f"expected IN or LIKE after NOT, found {self.peek()[1]!r}")
        if left is _TRUE or left is _FALSE:
            return left
        raise FilterError(f"expected a comparison, found {self.peek()[1] or 'end of expression'!r}")

    def _parenthesised_predicate(self) -> bool:
        """Whether '(' opens a predicate rather than an expression: look for a comparison or keyword inside."""
        depth = 0
        for kind, value in self.tokens[self.i:]:
            if kind == "op" and value == "(":
                depth += 1
            elif kind == "op" and value == ")":
                depth -= 1
                if depth == 0:
                    return False
            elif depth >= 1 and ((kind == "kw" and value in ("and", "or", "not", "in", "is", "like", "exists"))
                                 or (kind == "op" and value in ("=", "<>", "!=", ">", ">=", "<", "<="))):
                return True
            elif kind == "end":
                return False
        return False

    def string_constant(self) -> str:
        kind, value = self.take()
        if kind != "string":
            raise FilterError(f"expected a string constant, found {value!r}")
        return value[1:-1].replace("''", "'")

    def operand(self) -> Callable[[MessageView], Any]:
        kind, value = self.peek()
        if kind == "op" and value in ("+", "-") and self.peek(1)[0] == "number":
            self.take()
            number = _number(self.take()[1])
            constant = -number if value == "-" else number
            return lambda m: constant
        if kind == "number":
            self.take()
            constant_n = _number(value)
            return lambda m: constant_n
        if kind == "string":
            constant_s = self.string_constant()
            return lambda m: constant_s
        if kind == "kw" and value in ("true", "false"):
            self.take()
            return _TRUE if value == "true" else _FALSE
        if kind == "kw" and value == "null":
            self.take()
            return lambda m: None
        if kind in ("word", "delimited"):
            getter, _ = self.property_ref()
            if self.peek() == ("op", "("):
                raise FilterError(f"functions are not supported ({value}(...))")
            return getter
        if kind == "op" and value in ("+", "-", "*", "/", "%", "("):
            raise FilterError("arithmetic expressions are not supported")
        raise FilterError(f"expected a property or a constant, found {value or 'end of expression'!r}")

    def property_ref(self) -> tuple[Callable[[MessageView], Any], str]:
        kind, first = self.take()
        if kind not in ("word", "delimited"):
            raise FilterError(f"expected a property name, found {first!r}")
        scope, name = "user", _ident(kind, first)
        if kind == "word" and first.lower() in ("sys", "user") and self.accept("op", "."):
            scope = first.lower()
            kind2, second = self.take()
            if kind2 not in ("word", "delimited", "kw"):
                raise FilterError(f"expected a property name after {first}., found {second!r}")
            name = _ident(kind2, second)
        if self.peek() == ("op", "."):
            raise FilterError(f"unknown property scope {first!r} (sys or user)")
        if (self.peek()[0] in ("op",) and self.peek()[1] in ("+", "*", "/", "%")) or (
                self.peek() == ("op", "-") and self.peek(1)[0] in ("number", "word")):
            raise FilterError("arithmetic expressions are not supported")
        if scope == "sys":
            key = SYSTEM_PROPERTIES.get(name.lower())
            if key is None:
                raise FilterError(f"unknown or unsupported system property sys.{name}")
            return (lambda m: m.system.get(key)), name
        return (lambda m: m.user.get(name, _MISSING)), name


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()


def _TRUE(m: MessageView) -> bool:
    return True


def _FALSE(m: MessageView) -> bool:
    return False


def _ident(kind: str, text: str) -> str:
    if kind == "delimited":
        inner = text[1:-1]
        return inner.replace('""', '"') if text.startswith('"') else inner
    return text


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _value(value: Any) -> Any:
    """A property value for comparison: missing → None (unknown), bytes → text (the SDK sends strings)."""
    if value is _MISSING:
        return None
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value


def _comparable(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, numeric) and isinstance(b, numeric):
        return True
    return type(a) is type(b)


def _compare(op: str, left: Callable[[MessageView], Any], right: Callable[[MessageView], Any]) -> Predicate:
    def run(m: MessageView) -> Any:
        a, b = _value(left(m)), _value(right(m))
        if a is None or b is None or not _comparable(a, b):
            return UNKNOWN
        try:
            if op == "=":
                return a == b
            if op in ("<>", "!="):
                return a != b
            if op == ">":
                return a > b
            if op == ">=":
                return a >= b
            if op == "<":
                return a < b
            return a <= b
        except TypeError:
            return UNKNOWN
    return run


def _in(left: Callable[[MessageView], Any], options: list[Callable[[MessageView], Any]]) -> Predicate:
    def run(m: MessageView) -> Any:
        a = _value(left(m))
        if a is None:
            return UNKNOWN
        return any(_comparable(a, b) and a == b for b in (_value(o(m)) for o in options))
    return run


def _like(left: Callable[[MessageView], Any], pattern: str, escape: str | None) -> Predicate:
    if escape is not None and len(escape) != 1:
        raise FilterError("ESCAPE takes a single character")
    regex, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if escape is not None and c == escape and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if c == "%" else "." if c == "_" else re.escape(c)
        i += 1
    compiled = re.compile(regex, re.DOTALL)

    def run(m: MessageView) -> Any:
        a = _value(left(m))
        if not isinstance(a, str):
            return UNKNOWN
        return compiled.fullmatch(a) is not None
    return run


def _and(left: Predicate, right: Predicate) -> Predicate:
    def run(m: MessageView) -> Any:
        a, b = left(m), right(m)
        if a is False or b is False:
            return False
        return UNKNOWN if a is None or b is None else True
    return run


def _or(left: Predicate, right: Predicate) -> Predicate:
    def run(m: MessageView) -> Any:
        a, b = left(m), right(m)
        if a is True or b is True:
            return True
        return UNKNOWN if a is None or b is None else False
    return run


def _maybe_not(predicate: Predicate, negate: bool) -> Predicate:
    if not negate:
        return predicate
    return lambda m: None if (v := predicate(m)) is None else not v


def compile_sql(expression: str) -> Callable[[MessageView], bool]:
    """Compile a SQL filter expression; the result is True only when the filter is true (not unknown)."""
    if not expression or not expression.strip():
        raise FilterError("empty SQL expression")
    parser = _Parser(expression)
    predicate = parser.predicate()
    if parser.peek()[0] != "end":
        raise FilterError(f"unexpected {parser.peek()[1]!r} after the expression")
    return lambda m: predicate(m) is True


CORRELATION_FIELDS = {
    "ContentType": "content_type", "CorrelationId": "correlation_id", "Label": "subject", "Subject": "subject",
    "MessageId": "message_id", "ReplyTo": "reply_to", "ReplyToSessionId": "reply_to_session_id",
    "SessionId": "session_id", "To": "to",
}


def compile_correlation(spec: Mapping[str, Any]) -> Callable[[MessageView], bool]:
    """A correlation filter: every given system property and application property must be equal."""
    if not isinstance(spec, Mapping) or not spec:
        raise FilterError("CorrelationFilter must be a non-empty object")
    system: dict[str, Any] = {}
    user: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "Properties":
            if not isinstance(value, Mapping):
                raise FilterError("CorrelationFilter.Properties must be an object")
            user.update(value)
        elif key in CORRELATION_FIELDS:
            system[CORRELATION_FIELDS[key]] = value
        else:
            raise FilterError(f"unknown CorrelationFilter field {key!r}")

    def run(m: MessageView) -> bool:
        for key, wanted in system.items():
            if _value(m.system.get(key)) != wanted:
                return False
        for key, wanted in user.items():
            got = _value(m.user.get(key, _MISSING))
            if got is None or not _comparable(got, wanted) or got != wanted:
                return False
        return True
    return run

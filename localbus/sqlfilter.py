"""Subscription rule filters: SQL filters (the SQL-92 subset Service Bus documents) and correlation filters.

A filter is compiled once, at start-up, into a function of a :class:`MessageView`; a rule localbus cannot run is
a :class:`FilterError` naming it, so a config never loads with a filter silently ignored.

SQL semantics follow "Subscription Rule SQL Filter Syntax": ``sys.`` names message properties (case-insensitive),
``user.`` or no scope names application properties; a missing user property is *unknown*, which makes
comparisons, ``IN`` and ``LIKE`` unknown, and logic is three-valued; a rule matches only when its filter is true.
Supported: comparison (``= <> != > >= < <=``), ``AND OR NOT``, ``[NOT] IN (...)``, ``IS [NOT] NULL``,
``EXISTS(...)``, ``[NOT] LIKE 'pattern' [ESCAPE 'c']``, parentheses, string/number/boolean/NULL constants.
Not supported (refused at start-up): arithmetic, functions (``newid()``, ``property()``), rule actions.

Bounds, so that no filter can cost the broker more than its text suggests: an expression is at most 1,024
characters (Service Bus's own limit) and nests at most :data:`MAX_DEPTH` levels (parentheses and ``NOT``);
``AND``/``OR`` chains are flat lists, so evaluation recurses no deeper than the nesting. ``LIKE`` never
backtracks: the pattern is cut at its ``%`` into fixed-length pieces, each found at its leftmost place (which is
always right for fixed-length pieces), so a match costs one pass over the value per piece length at most.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

UNKNOWN: Any = None  # three-valued logic: True, False, or unknown (None)

# Service Bus: "Maximum length of filter condition string: 1,024" (quotas); a longer one is refused at load.
MAX_EXPRESSION_LENGTH = 1024
# Ours (Service Bus documents none): parentheses and NOTs nested deeper than this are refused at load. The
# expression itself is level 1, so "(p = 1)" is 2 levels deep.
MAX_DEPTH = 32
# A wildcard piece of a LIKE pattern is searched for in windows of this many characters, so that one call into
# the regular-expression engine (which holds the GIL) is short however long the value is.
_LIKE_WINDOW = 4096

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


@dataclass(frozen=True)
class Filter:
    """A compiled filter: true only when its predicate is true (not unknown). ``nodes`` and ``like_units`` say
    what one evaluation costs: ``nodes`` steps, plus ``like_units`` passes over the longest property value."""

    predicate: Predicate
    nodes: int = 1
    like_units: int = 0

    def __call__(self, m: MessageView) -> bool:
        return self.predicate(m) is True


MATCH_ALL = Filter(lambda m: True)

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
        self.depth = 1
        self.nodes = 0
        self.like_units = 0

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"the filter is nested more than {MAX_DEPTH} levels deep (parentheses and NOT); "
                              "localbus refuses deeper filters")

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
        terms = [self.conjunction()]
        while self.accept("kw", "or"):
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else _chain(terms, True)

    def conjunction(self) -> Predicate:
        terms = [self.negation()]
        while self.accept("kw", "and"):
            terms.append(self.negation())
        return terms[0] if len(terms) == 1 else _chain(terms, False)

    def negation(self) -> Predicate:
        self.nodes += 1
        if self.accept("kw", "not"):
            self.deeper()
            inner = self.negation()
            self.depth -= 1
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
            self.deeper()
            inner = self.predicate()
            self.expect("op", ")")
            self.depth -= 1
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
            self.nodes += len(options)
            return _maybe_not(_in(left, options), negate)
        if self.accept("kw", "like"):
            pattern = self.string_constant()
            escape = self.string_constant() if self.accept("kw", "escape") else None
            self.like_units += max(1, len(pattern))
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


class LikePattern:
    """A LIKE pattern as a matcher that never backtracks.

    ``%`` cuts the pattern into pieces of fixed length (characters and ``_``). The first piece must sit at the
    start, the last at the end, and each one between at its leftmost place after the one before: taking the
    leftmost place never loses a match, because every piece has a fixed length and the pieces after it only
    need room. Literal pieces are found with ``str.find`` (linear); pieces with ``_`` by a fixed-length regular
    expression (no repetition, so no backtracking), searched window by window.
    """

    def __init__(self, pattern: str, escape: str | None = None) -> None:
        if escape is not None and len(escape) != 1:
            raise FilterError("ESCAPE takes a single character")
        pieces: list[list[str | None]] = [[]]  # None is '_'
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if escape is not None and c == escape and i + 1 < len(pattern):
                pieces[-1].append(pattern[i + 1])
                i += 2
                continue
            if c == "%":
                pieces.append([])
            else:
                pieces[-1].append(None if c == "_" else c)
            i += 1
        self.pieces = [_Piece(piece) for piece in pieces]

    def __call__(self, value: str) -> bool:
        pieces = self.pieces
        first, last = pieces[0], pieces[-1]
        if len(pieces) == 1:
            return len(value) == first.length and first.match_at(value, 0)
        end = len(value) - last.length
        if end < first.length or not first.match_at(value, 0) or not last.match_at(value, end):
            return False
        pos = first.length
        for piece in pieces[1:-1]:
            found = piece.find(value, pos, end)
            if found < 0:
                return False
            pos = found + piece.length
        return True


class _Piece:
    """A fixed-length run of a LIKE pattern between two ``%``: characters, and ``_`` for any one character."""

    def __init__(self, chars: list[str | None]) -> None:
        self.length = len(chars)
        self.literal = "".join(c for c in chars if c is not None) if None not in chars else None
        self.regex = None if self.literal is not None or all(c is None for c in chars) else re.compile(
            "".join("." if c is None else re.escape(c) for c in chars), re.DOTALL)

    def match_at(self, value: str, pos: int) -> bool:
        if self.literal is not None:
            return value.startswith(self.literal, pos)
        if self.regex is None:  # only '_': any characters will do
            return pos + self.length <= len(value)
        return self.regex.match(value, pos, pos + self.length) is not None

    def find(self, value: str, start: int, end: int) -> int:
        """The leftmost position p, start <= p and p + length <= end, where the piece matches; -1 if none."""
        if self.literal is not None:
            return value.find(self.literal, start, end)
        if self.regex is None:
            return start if start + self.length <= end else -1
        window = _LIKE_WINDOW
        while start + self.length <= end:
            stop = min(end, start + window + self.length - 1)
            found = self.regex.search(value, start, stop)
            if found is not None:
                return found.start()
            start += window
        return -1


def _like(left: Callable[[MessageView], Any], pattern: str, escape: str | None) -> Predicate:
    matcher = LikePattern(pattern, escape)

    def run(m: MessageView) -> Any:
        a = _value(left(m))
        if not isinstance(a, str):
            return UNKNOWN
        return matcher(a)
    return run


def _chain(terms: list[Predicate], decisive: bool) -> Predicate:
    """Three-valued AND (``decisive=False``: any false term decides) or OR (``True``) of any number of terms; a
    flat list, so a long chain costs no recursion."""
    def run(m: MessageView) -> Any:
        unknown = False
        for term in terms:
            v = term(m)
            if v is decisive:
                return decisive
            if v is None:
                unknown = True
        return UNKNOWN if unknown else not decisive
    return run


def _maybe_not(predicate: Predicate, negate: bool) -> Predicate:
    if not negate:
        return predicate
    return lambda m: None if (v := predicate(m)) is None else not v


def compile_sql(expression: str) -> Filter:
    """Compile a SQL filter expression within the bounds above; the result is True only when the filter is true
    (not unknown)."""
    if not expression or not expression.strip():
        raise FilterError("empty SQL expression")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FilterError(f"the filter is {len(expression):,} characters long, longer than "
                          f"{MAX_EXPRESSION_LENGTH:,} characters (Service Bus's limit for a SQL filter)")
    parser = _Parser(expression)
    predicate = parser.predicate()
    if parser.peek()[0] != "end":
        raise FilterError(f"unexpected {parser.peek()[1]!r} after the expression")
    return Filter(predicate, parser.nodes, parser.like_units)


CORRELATION_FIELDS = {
    "ContentType": "content_type", "CorrelationId": "correlation_id", "Label": "subject", "Subject": "subject",
    "MessageId": "message_id", "ReplyTo": "reply_to", "ReplyToSessionId": "reply_to_session_id",
    "SessionId": "session_id", "To": "to",
}


def compile_correlation(spec: Mapping[str, Any]) -> Filter:
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
    return Filter(run, len(system) + len(user))

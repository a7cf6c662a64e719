"""Small, strict readers for the deployment files, with no third-party dependency.

`make test` runs in the project venv, which has no YAML or Bicep parser, so these readers understand
exactly the subset of YAML/Bicep our files use and raise `FormatError` on anything else, instead of
guessing. `lint_infra.py` (run with the full parsers in .venv-lint) checks that they agree with
PyYAML and pycep, so a file they would misread cannot pass unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The topic form: an override of the worker's environment, `docker compose -f docker-compose.yml -f <this> up`.
COMPOSE_TOPIC_FILE = ROOT / "docker-compose.topic.yml"
DOCKERFILE = ROOT / "Dockerfile"
AZURE_YAML = ROOT / "azure.yaml"
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
SERVICEBUS_BICEP = INFRA / "modules" / "servicebus.bicep"
DTS_BICEP = INFRA / "modules" / "dts.bicep"
CONTAINERAPP_BICEP = INFRA / "modules" / "containerapp.bicep"
EMULATOR_CONFIG = INFRA / "servicebus-emulator" / "Config.json"
MAIN_PARAMETERS = INFRA / "main.parameters.json"

# The two forms of what the worker reads (the Bicep parameter serviceBusSource): a queue, or a topic subscription
# plus the worker's own retry queue.
SOURCES = ("queue", "topic")


class FormatError(ValueError):
    """The file uses a construct these readers do not understand: fix the file or the reader."""


# --- docker-compose.yml -------------------------------------------------------------------------

def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _significant(lines: list[str]) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if "\t" in line[: _indent(line) + 1]:
                raise FormatError(f"line {number}: tab indentation")
            out.append((number, line.rstrip("\n")))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace("''", "'") if value[0] == "'" else inner
    if " #" in value:  # trailing comment on a plain scalar
        value = value.split(" #", 1)[0].rstrip()
    return value


def compose_service_block(text: str, service: str) -> list[tuple[int, str]]:
    """The lines of `services.<service>` (indentation 2 under a top-level `services:`)."""
    lines = _significant(text.splitlines())
    in_services = False
    block: list[tuple[int, str]] = []
    collecting = False
    for number, line in lines:
        indent = _indent(line)
        if indent == 0:
            in_services = line.strip() == "services:"
            collecting = False
            continue
        if not in_services:
            continue
        if indent == 2:
            collecting = line.strip() == f"{service}:"
            continue
        if collecting:
            block.append((number, line))
    if not block:
        raise FormatError(f"no service {service!r} under services:")
    return block


def compose_environment(text: str, service: str) -> dict[str, str]:
    """`services.<service>.environment` as a dict; only the `KEY: value` mapping form is accepted."""
    block = compose_service_block(text, service)
    env: dict[str, str] = {}
    inside = False
    for number, line in block:
        indent = _indent(line)
        stripped = line.strip()
        if indent == 4:
            inside = stripped.split("#", 1)[0].strip() == "environment:"
            if stripped.startswith("environment:") and not inside:
                raise FormatError(f"line {number}: write environment as a block mapping")
            continue
        if not inside or indent < 6:
            continue
        if indent != 6 or stripped.startswith("- "):
            raise FormatError(f"line {number}: environment must be a flat `KEY: value` mapping")
        key, sep, value = stripped.partition(":")
        if value.strip().startswith(("*", "&", "!")):
            raise FormatError(f"line {number}: anchors, aliases and tags are not supported in environment")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise FormatError(f"line {number}: expected KEY: value, got {stripped!r}")
        if key in env:
            raise FormatError(f"line {number}: {key} set twice")
        value = value.strip()
        if value.startswith(("|", ">")):
            raise FormatError(f"line {number}: block scalars are not supported in environment")
        env[key] = _unquote(value)
    return env


def compose_worker_environment(source: str = "queue") -> dict[str, str]:
    """The worker's environment in one form: docker-compose.yml, merged with the topic override for the topic
    form (Compose merges `environment` mappings key by key, the later file winning)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    env = compose_environment(COMPOSE_FILE.read_text(encoding="utf-8"), "worker")
    if source == "topic":
        env.update(compose_environment(COMPOSE_TOPIC_FILE.read_text(encoding="utf-8"), "worker"))
    return env


def compose_volumes(text: str, service: str) -> list[str]:
    """Short-syntax volume strings of a service."""
    block = compose_service_block(text, service)
    volumes: list[str] = []
    inside = False
    for _number, line in block:
        indent = _indent(line)
        if indent == 4:
            inside = line.strip() == "volumes:"
            continue
        if inside and indent == 6 and line.strip().startswith("- "):
            volumes.append(_unquote(line.strip()[2:]))
    return volumes


# --- Bicep ----------------------------------------------------------------------------------------

def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside strings (Bicep strings are single-quoted)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == "'":
                in_string = False
            i += 1
        elif c == "'":
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise FormatError("unterminated block comment")
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _balanced(text: str, start: int) -> str:
    """The text from the bracket at `start` to its matching closing bracket (strings respected)."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    opener = text[start]
    if opener not in pairs:
        raise FormatError(f"expected a bracket at offset {start}")
    stack = [pairs[opener]]
    i = start + 1
    in_string = False
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 2
                continue
            if c == "'":
                in_string = False
        elif c == "'":
            in_string = True
        elif c in pairs:
            stack.append(pairs[c])
        elif c in "}])":
            if c != stack.pop():
                raise FormatError(f"mismatched {c!r} at offset {i}")
            if not stack:
                return text[start : i + 1]
        i += 1
    raise FormatError("unbalanced brackets")


def read_bicep(path: Path) -> str:
    return _strip_comments(path.read_text(encoding="utf-8"))


def _resource_parts(text: str, symbolic_name: str) -> tuple[str, str | None, str]:
    """(type@apiVersion, condition or None, `{...}` body) of `resource <name> '<type>' = [if (<cond>)] {...}`."""
    match = re.search(rf"^resource\s+{re.escape(symbolic_name)}\s+'([^']+)'\s*=\s*", text, re.MULTILINE)
    if not match:
        raise FormatError(f"no resource {symbolic_name!r}")
    i = match.end()
    condition = None
    if text.startswith("if", i):
        paren = text.index("(", i)
        parenthesized = _balanced(text, paren)
        condition = parenthesized[1:-1].strip()
        i = paren + len(parenthesized)
        while text[i] in " \t":
            i += 1
    if text[i] != "{":
        raise FormatError(f"resource {symbolic_name!r}: expected an object body")
    return match.group(1), condition, _balanced(text, i)


def resource_body(text: str, symbolic_name: str) -> tuple[str, str]:
    """(type@apiVersion, `{...}` body) of `resource <symbolic_name> '<type>' = [if (...)] {...}`."""
    rtype, _condition, body = _resource_parts(text, symbolic_name)
    return rtype, body


def resource_condition(text: str, symbolic_name: str) -> str | None:
    """The `if (...)` condition of a resource declaration, None when it is always deployed."""
    return _resource_parts(text, symbolic_name)[1]


def is_existing(text: str, symbolic_name: str) -> bool:
    """Whether `resource <name> '<type>' existing = ...` only refers to a resource another module deploys."""
    return re.search(rf"^resource\s+{re.escape(symbolic_name)}\s+'[^']+'\s+existing\b", text, re.MULTILINE) is not None


def resources(text: str) -> dict[str, str]:
    """symbolic name → 'type@apiVersion' for every resource declaration."""
    return dict(re.findall(r"^resource\s+(\w+)\s+'([^']+)'", text, re.MULTILINE))


def object_property(body: str, name: str) -> str:
    """Raw value text of the first `name:` property inside an object body (any depth)."""
    match = re.search(rf"^\s*{re.escape(name)}\s*:\s*", body, re.MULTILINE)
    if not match:
        raise FormatError(f"no property {name!r}")
    i = match.end()
    if body[i] in "{[":
        return _balanced(body, i)
    call = re.match(r"\w+\(", body[i:])
    if call:  # a function call, possibly over several lines: `concat(a, [ ... ])`
        return body[i : i + call.end() - 1] + _balanced(body, i + call.end() - 1)
    end = body.find("\n", i)
    return body[i:end].strip()


def scalar(raw: str) -> str | int | bool:
    """A Bicep literal: 'string', int, true/false."""
    raw = raw.strip()
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if len(raw) >= 2 and raw[0] == raw[-1] == "'" and "${" not in raw:
        return raw[1:-1].replace("\\'", "'")
    raise FormatError(f"not a literal: {raw!r}")


def param_default(text: str, name: str) -> str | int | bool:
    match = re.search(rf"^param\s+{re.escape(name)}\s+\w+\s*=\s*(.+)$", text, re.MULTILINE)
    if not match:
        raise FormatError(f"param {name!r} has no default")
    return scalar(match.group(1))


def object_keys(obj: str) -> list[str]:
    """Top-level keys of an object literal `{ key: value ... }` (one property a line, as our files write them)."""
    if not obj.startswith("{"):
        raise FormatError("not an object literal")
    keys: list[str] = []
    line_start = True
    for i, c, depth, in_string in _scan(obj):
        if c == "\n":
            line_start = True
            continue
        if line_start and not c.isspace():
            line_start = False
            if depth == 1 and not in_string and c != "}":
                key = re.match(r"'?([\w-]+)'?\s*:", obj[i:])
                if not key:
                    raise FormatError(f"expected `key:` in object at {obj[i:i + 40]!r}")
                keys.append(key.group(1))
    return keys


def _scan(text: str) -> Iterator[tuple[int, str, int, bool]]:
    """Each character with the bracket depth and whether a '…' string is open, as they stand before it."""
    depth, in_string = 0, False
    for i, c in enumerate(text):
        yield i, c, depth, in_string
        if in_string:
            in_string = c != "'" or text[i - 1] == "\\"
        elif c == "'":
            in_string = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1


def module_condition(text: str, symbolic_name: str) -> str | None:
    """The `if (...)` condition of a module declaration, or None."""
    match = re.search(rf"^module\s+{symbolic_name}\s+'[^']+'\s*=\s*if\s*\(([^)]*)\)", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def modules(text: str) -> dict[str, tuple[str, str]]:
    """symbolic name → (module path, `{...}` body) of every `module` declaration (with or without `if (...)`)."""
    out = {}
    for match in re.finditer(r"^module\s+(\w+)\s+'([^']+)'\s*=\s*(?:if\s*\([^)]*\)\s*)?", text, re.MULTILINE):
        if text[match.end()] != "{":
            raise FormatError(f"module {match.group(1)}: expected an object body")
        out[match.group(1)] = (match.group(2), _balanced(text, match.end()))
    return out


def params(text: str) -> dict[str, str | int | bool | None]:
    """Every param and its literal default (None when it has none or it is not a literal)."""
    result: dict[str, str | int | bool | None] = {}
    for name, default in re.findall(r"^param\s+(\w+)\s+\w+(?:\s*=\s*(.+))?$", text, re.MULTILINE):
        try:
            result[name] = scalar(default) if default else None
        except FormatError:
            result[name] = None
    return result


def variables(text: str) -> dict[str, str]:
    """var name → raw expression (single-line vars only)."""
    return {name: value.strip() for name, value in re.findall(r"^var\s+(\w+)\s*=\s*(.+)$", text, re.MULTILINE)}


def variable(text: str, name: str) -> str:
    """Raw expression of `var <name> = ...`, including a multi-line array or object."""
    match = re.search(rf"^var\s+{re.escape(name)}\s*=\s*", text, re.MULTILINE)
    if not match:
        raise FormatError(f"no var {name!r}")
    i = match.end()
    if text[i] in "{[":
        return _balanced(text, i)
    return text[i : text.find("\n", i)].strip()


def _split_arguments(inner: str) -> list[str]:
    """Top-level comma-separated arguments of a call (brackets and strings respected)."""
    args: list[str] = []
    start = 0
    for i, c, depth, in_string in _scan(inner):
        if c == "," and depth == 0 and not in_string:
            args.append(inner[start:i].strip())
            start = i + 1
    args.append(inner[start:].strip())
    return [a for a in args if a]


def _array_items(array: str) -> list[str]:
    """The `{...}` items of an array literal."""
    items: list[str] = []
    i = 1
    while True:
        start = array.find("{", i)
        if start < 0:
            return items
        item = _balanced(array, start)
        items.append(item)
        i = start + len(item)


# The one condition that selects between the forms, and how it must be defined.
IS_TOPIC = "isTopic"
IS_TOPIC_DEFINITIONS = ("serviceBusSource == 'topic'", "source == 'topic'")


def form_array(text: str, expression: str, source: str) -> list[str]:
    """The items of an array expression for one form: an array literal, a var, `concat(...)` of those, or
    `isTopic ? <a> : <b>`. Anything else is a FormatError rather than a guess."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    expression = expression.strip()
    if expression.startswith("["):
        return _array_items(_balanced(expression, 0))
    call = re.fullmatch(r"concat\((.*)\)", expression, re.DOTALL)
    if call:
        return [item for arg in _split_arguments(call.group(1)) for item in form_array(text, arg, source)]
    choice = re.fullmatch(rf"{IS_TOPIC}\s*\?\s*(\w+)\s*:\s*(\w+)", expression)
    if choice:
        if variable(text, IS_TOPIC) not in IS_TOPIC_DEFINITIONS:
            raise FormatError(f"var {IS_TOPIC} must be one of {IS_TOPIC_DEFINITIONS}")
        return form_array(text, choice.group(1) if source == "topic" else choice.group(2), source)
    if re.fullmatch(r"\w+", expression):
        return form_array(text, variable(text, expression), source)
    raise FormatError(f"unsupported array expression: {expression[:80]!r}")


HAS_USER = "hasUser"
HAS_USER_DEFINITION = "!empty(userPrincipalId)"


def deployed(text: str, condition: str | None, source: str, *, has_user: bool = True) -> bool:
    """Whether a resource with this `if (...)` condition is deployed in one form. Conditions are `&&` of
    `[!]isTopic` and `[!]hasUser`; anything else is a FormatError."""
    if condition is None:
        return True
    values = {IS_TOPIC: source == "topic", HAS_USER: has_user}
    definitions = {IS_TOPIC: IS_TOPIC_DEFINITIONS, HAS_USER: (HAS_USER_DEFINITION,)}
    result = True
    for term in condition.split("&&"):
        match = re.fullmatch(r"\s*(!?)\s*(\w+)\s*", term)
        if not match or match.group(2) not in values:
            raise FormatError(f"unsupported condition {condition!r}")
        if variable(text, match.group(2)) not in definitions[match.group(2)]:
            raise FormatError(f"var {match.group(2)} must be one of {definitions[match.group(2)]}")
        result = result and (values[match.group(2)] != bool(match.group(1)))
    return result


SECRET_REF = "secretRef:"


def container_env(text: str, source: str = "queue") -> dict[str, str]:
    """name → raw value expression of the container app's `env` for one form (queue or topic)."""
    _type, body = resource_body(text, "app")
    env: dict[str, str] = {}
    for item in form_array(text, object_property(body, "env"), source):
        name = scalar(object_property(item, "name"))
        if not isinstance(name, str):
            raise FormatError(f"env name is not a string: {name!r}")
        if name in env:
            raise FormatError(f"{name} set twice")
        # A secret's value is the expression naming it, marked: `secretRef:<expression>`.
        env[name] = (f"{SECRET_REF}{object_property(item, 'secretRef')}" if "secretRef" in item
                     else object_property(item, "value"))
    return env


def scale_rules(text: str, source: str = "queue") -> list[str]:
    """The `{...}` scale rules of the container app for one form."""
    _type, body = resource_body(text, "app")
    return form_array(text, object_property(object_property(body, "scale"), "rules"), source)


# --- Dockerfile / azure.yaml ---------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined: list[str] = []
    buffer = ""
    for line in text.splitlines():
        if not buffer and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            joined.append(buffer.strip())
        buffer = ""
    out = []
    for line in joined:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out

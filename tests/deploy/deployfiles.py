"""Small, strict readers for the deployment files, with no third-party dependency.

`make test` runs in the project venv, which has no YAML or Bicep parser, so these readers understand
exactly the subset of YAML/Bicep our files use and raise `FormatError` on anything else, instead of
guessing. `lint_infra.py` (run with the full parsers in .venv-lint) checks that they agree with
PyYAML and pycep, so a file they would misread cannot pass unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
AZURE_YAML = ROOT / "azure.yaml"
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
SERVICEBUS_BICEP = INFRA / "modules" / "servicebus.bicep"
DTS_BICEP = INFRA / "modules" / "dts.bicep"
CONTAINERAPP_BICEP = INFRA / "modules" / "containerapp.bicep"
EMULATOR_CONFIG = INFRA / "servicebus-emulator" / "Config.json"


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


def resource_body(text: str, symbolic_name: str) -> tuple[str, str]:
    """(type@apiVersion, `{...}` body) of `resource <symbolic_name> '<type>' = [if (...)] {...}`."""
    match = re.search(rf"^resource\s+{re.escape(symbolic_name)}\s+'([^']+)'\s*=\s*", text, re.MULTILINE)
    if not match:
        raise FormatError(f"no resource {symbolic_name!r}")
    i = match.end()
    if text.startswith("if", i):
        paren = text.index("(", i)
        i = paren + len(_balanced(text, paren))
        while text[i] in " \t":
            i += 1
    if text[i] != "{":
        raise FormatError(f"resource {symbolic_name!r}: expected an object body")
    return match.group(1), _balanced(text, i)


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


SECRET_REF = "secretRef:"


def container_env(text: str) -> dict[str, str]:
    """name → raw value expression of the `env: [...]` array of the container app."""
    _type, body = resource_body(text, "app")
    array = object_property(body, "env")
    if not array.startswith("["):
        raise FormatError("env is not an array")
    env: dict[str, str] = {}
    i = 1
    while True:
        start = array.find("{", i)
        if start < 0:
            break
        item = _balanced(array, start)
        name = scalar(object_property(item, "name"))
        if not isinstance(name, str):
            raise FormatError(f"env name is not a string: {name!r}")
        if name in env:
            raise FormatError(f"{name} set twice")
        # A secret's value is the expression naming it, marked: `secretRef:<expression>`.
        env[name] = (f"{SECRET_REF}{object_property(item, 'secretRef')}" if "secretRef" in item
                     else object_property(item, "value"))
        i = start + len(item)
    return env


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

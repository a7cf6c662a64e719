"""A static check of the orchestrator determinism rules.

Orchestrators are replayed from history, so anything that reads the clock, randomness, the environment or the
network gives a different answer on replay. This walks the AST of every module in a package, resolves import
aliases (`import datetime as dt`, `from time import sleep`), and reports each banned reference with file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Exact dotted names that are banned, and prefixes under which everything is banned.
BANNED_EXACT = {
    "datetime.datetime.now": "use ctx.current_utc_datetime",
    "datetime.datetime.utcnow": "use ctx.current_utc_datetime",
    "datetime.datetime.today": "use ctx.current_utc_datetime",
    "datetime.date.today": "use ctx.current_utc_datetime",
    "time.time": "use ctx.current_utc_datetime",
    "time.time_ns": "use ctx.current_utc_datetime",
    "time.sleep": "use ctx.create_timer()",
    "time.monotonic": "use ctx.current_utc_datetime",
    "time.monotonic_ns": "use ctx.current_utc_datetime",
    "time.perf_counter": "use ctx.current_utc_datetime",
    "uuid.uuid1": "use ctx.new_uuid()",
    "uuid.uuid4": "use ctx.new_uuid()",
    "os.environ": "pass configuration in the input or read it in an activity",
    "os.getenv": "pass configuration in the input or read it in an activity",
    "os.environb": "pass configuration in the input or read it in an activity",
    "builtins.open": "do I/O in an activity",
    "io.open": "do I/O in an activity",
}
BANNED_PREFIXES = {
    "random": "pass random values from an activity",
    "secrets": "pass random values from an activity",
    "requests": "do network I/O in an activity",
    "httpx": "do network I/O in an activity",
    "urllib": "do network I/O in an activity",
    "aiohttp": "do network I/O in an activity",
    "socket": "do network I/O in an activity",
}


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    name: str
    advice: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} is not deterministic ({self.advice})"


def check_package(package_dir: Path) -> list[Finding]:
    findings: list[Finding] = []
    for path in sorted(package_dir.rglob("*.py")):
        findings.extend(check_source(path.read_text(encoding="utf-8"), path))
    return findings


def check_source(source: str, path: Path) -> list[Finding]:
    tree = ast.parse(source, filename=str(path))
    aliases = _aliases(tree)
    findings: list[Finding] = []
    # Only whole chains are judged: `datetime.datetime.now` once, not again as its inner `datetime.datetime`.
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported_names(node):
                verdict = _verdict(name)
                if verdict:
                    findings.append(Finding(path, node.lineno, name, verdict))
            continue
        if not isinstance(node, ast.Attribute | ast.Name) or id(node) in inner:
            continue
        dotted = _dotted(node, aliases)
        if dotted is None:
            continue
        verdict = _verdict(dotted)
        if verdict:
            findings.append(Finding(path, node.lineno, dotted, verdict))
    return sorted(set(findings), key=lambda f: (f.line, f.name))


def _verdict(dotted: str) -> str | None:
    for name, advice in BANNED_EXACT.items():
        if dotted == name or dotted.startswith(name + "."):
            return advice
    root = dotted.split(".", 1)[0]
    return BANNED_PREFIXES.get(root)


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name → fully qualified dotted name, from every import in the module."""
    aliases: dict[str, str] = {"open": "builtins.open"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    # A local definition named like a builtin shadows it.
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == "open":
            aliases.pop("open", None)
    return aliases


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.module is None or node.level:
        return []
    return [f"{node.module}.{alias.name}" for alias in node.names]


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    parts.append(aliases[node.id])
    return ".".join(reversed(parts))


"""Static checks of the deployment files with the heavy tools; run by `make lint-infra` in .venv-lint.

1. every .bicep under infra/ parses (pycep);
2. checkov: no failed check on infra/ (bicep) or the Dockerfile (skips only inline, with a reason);
3. hadolint: the Dockerfile is clean;
4. docker-compose.yml and its topic override validate against the Compose specification schema (vendored by
   check-jsonschema);
5. the dependency-free readers in deployfiles.py (used by `make test`) agree with PyYAML and pycep, in both
   forms (queue, topic).
Exits non-zero on the first failing step.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests.deploy import deployfiles as df  # noqa: E402


def run(step: str, *command: str) -> None:
    print(f"== {step}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(f"lint-infra: {step} failed (exit {result.returncode})")


def bicep_files() -> list[Path]:
    files = sorted((ROOT / "infra").rglob("*.bicep"))
    if not files:
        sys.exit("lint-infra: no .bicep files under infra/")
    return files


def parse_bicep() -> dict[Path, dict]:
    from pycep import BicepParser

    parser = BicepParser()
    parsed = {}
    for path in bicep_files():
        print(f"== bicep parse: {path.relative_to(ROOT)}", flush=True)
        try:
            parsed[path] = parser.parse(file_path=path)
        except Exception as exc:  # lark raises several unrelated types
            sys.exit(f"lint-infra: {path.relative_to(ROOT)} does not parse: {exc}")
    return parsed


def cross_check_readers(parsed: dict[Path, dict]) -> None:
    """The light readers must see what the real parsers see, or `make test` checks the wrong thing."""
    import yaml

    print("== cross-check: deployfiles readers vs PyYAML / pycep", flush=True)
    compose = yaml.safe_load(df.COMPOSE_FILE.read_text(encoding="utf-8"))
    text = df.COMPOSE_FILE.read_text(encoding="utf-8")
    for service in ("worker",):
        real = {k: str(v) for k, v in (compose["services"][service].get("environment") or {}).items()}
        light = df.compose_environment(text, service)
        if real != light:
            sys.exit(f"lint-infra: compose reader disagrees with PyYAML for {service}: {light} != {real}")
    override = yaml.safe_load(df.COMPOSE_TOPIC_FILE.read_text(encoding="utf-8"))
    real_topic = {k: str(v) for k, v in (compose["services"]["worker"].get("environment") or {}).items()}
    real_topic.update({k: str(v) for k, v in override["services"]["worker"]["environment"].items()})
    if df.compose_worker_environment("topic") != real_topic:
        sys.exit("lint-infra: compose reader disagrees with PyYAML for the topic override")
    real_volumes = compose["services"]["servicebus-emulator"].get("volumes", [])
    if df.compose_volumes(text, "servicebus-emulator") != real_volumes:
        sys.exit("lint-infra: compose volume reader disagrees with PyYAML")

    for path, doc in parsed.items():
        light = df.resources(df.read_bicep(path))
        real = {
            name: f"{res['type']}@{res['api_version']}"
            for name, res in (doc.get("resources") or {}).items()
        }
        if light != real:
            sys.exit(f"lint-infra: Bicep resource reader disagrees with pycep in {path.name}: {light} != {real}")
    app_doc = parsed[df.CONTAINERAPP_BICEP]
    template = app_doc["resources"]["app"]["config"]["properties"]["template"]
    app_text = df.read_bicep(df.CONTAINERAPP_BICEP)
    for source in df.SOURCES:
        real_env = [item["name"] for item in _pycep_array(app_doc, template["containers"][0]["env"], source)]
        if list(df.container_env(app_text, source)) != real_env:
            sys.exit(f"lint-infra: container env reader disagrees with pycep ({source} form)")
        real_rules = [rule["name"] for rule in _pycep_array(app_doc, template["scale"]["rules"], source)]
        light_rules = [df.scalar(df.object_property(rule, "name")) for rule in df.scale_rules(app_text, source)]
        if light_rules != real_rules:
            sys.exit(f"lint-infra: scale rule reader disagrees with pycep ({source} form)")


def _pycep_array(doc: dict, value: object, source: str) -> list:
    """Evaluate pycep's tree of an array expression for one form: a literal, a variable, concat() and
    `isTopic ? a : b` (the constructs deployfiles.form_array accepts)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return _pycep_array(doc, doc["variables"][value]["value"], source)
    if isinstance(value, dict) and value.get("function", {}).get("type") == "concat":
        arguments = value["function"]["parameters"]
        return [item for key in sorted(arguments, key=lambda k: int(k.split("_")[1]))
                for item in _pycep_array(doc, arguments[key], source)]
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "conditional":
        operands = value["operator"]["operands"]
        if operands["condition"] != df.IS_TOPIC:
            sys.exit(f"lint-infra: unexpected condition {operands['condition']!r}")
        return _pycep_array(doc, operands["true_value" if source == "topic" else "false_value"], source)
    sys.exit(f"lint-infra: unexpected array expression in pycep's tree: {str(value)[:120]}")


def main() -> None:
    parsed = parse_bicep()
    run("checkov (bicep)", str(BIN / "checkov"), "--directory", "infra", "--framework", "bicep",
        "--skip-download", "--compact", "--quiet")
    run("checkov (dockerfile)", str(BIN / "checkov"), "--file", "Dockerfile", "--framework", "dockerfile",
        "--skip-download", "--compact", "--quiet")
    run("hadolint", str(BIN / "hadolint"), "--failure-threshold", "info", "Dockerfile")
    run("compose schema", str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
        "docker-compose.yml", "docker-compose.topic.yml")
    cross_check_readers(parsed)
    print("lint-infra: all checks passed")


if __name__ == "__main__":
    main()

"""The AsyncAPI document (docs/asyncapi.yaml): the official parser validates it, it is exactly what
`sbworker contract --asyncapi` generates, each example message is accepted by the listener's parser and satisfies
the document's own schemas, and every dead-letter reason is in it.

The parser is npm's @asyncapi/parser, run by validate.mjs from this folder's own package.json and lock (npm ci once,
tests/fixtures/node.py; node_modules is not committed).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from sbworker.cli import main
from sbworker.core import cloudevents
from sbworker.core.codes import Reason
from sbworker.operations import asyncapi
from sbworker.operations.publish import verify
from tests.fixtures.node import node_with_packages

HERE = Path(__file__).resolve().parent
DOCUMENT = HERE.parents[1] / "docs" / "asyncapi.yaml"
REGENERATE = "run: sbworker contract --asyncapi --output docs/asyncapi.yaml"


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def test_the_committed_document_is_what_the_command_generates(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == asyncapi.to_yaml(asyncapi.document()), REGENERATE
    written = tmp_path / "asyncapi.yaml"
    assert main(["contract", "--asyncapi", "--output", str(written)]) == 0
    assert written.read_text(encoding="utf-8") == DOCUMENT.read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["contract", "--asyncapi"]) == 0
    assert capsys.readouterr().out == DOCUMENT.read_text(encoding="utf-8")


def test_the_command_needs_a_format_and_a_writable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["contract"])
    assert ended.value.code == 2 and "--asyncapi" in capsys.readouterr().err
    assert main(["contract", "--asyncapi", "--output", str(tmp_path / "no" / "such" / "dir.yaml")]) == 2
    assert "cannot write" in capsys.readouterr().err


def examples(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(key, example) for key, message in document["components"]["messages"].items()
            for example in message.get("examples", [])]


def test_every_example_request_is_accepted_by_the_listeners_parser(committed: dict[str, Any]) -> None:
    requests = [(key, example) for key, example in examples(committed) if key != "deadLettered"]
    assert len(requests) >= 9 * 1  # three kinds in three forms, each with at least one example
    for key, example in requests:
        headers = example["headers"]
        properties = {k: v for k, v in headers.items() if k.startswith(cloudevents.PREFIXES) or k == "traceparent"}
        request = verify(json.dumps(example["payload"]).encode(), subject=headers.get("subject"),
                         content_type=headers.get("content_type"), message_id=headers["message_id"],
                         properties=properties)
        assert (request.cloudevent is None) is (key in ("start", "approval", "event")), key


def test_every_example_satisfies_the_documents_own_schemas(committed: dict[str, Any]) -> None:
    """The official parser does not check examples against schemas in AsyncAPI 3: we do, as draft-07 (the
    document's schema format), resolving its references within the document."""
    registry: Registry[Any] = Registry().with_resource("urn:asyncapi", Resource(committed, specification=DRAFT7))
    for key, example in examples(committed):
        for part in ("headers", "payload"):
            schema = {"$ref": f"urn:asyncapi#/components/messages/{key}/{part}"}
            problems = [e.message for e in Draft7Validator(schema, registry=registry).iter_errors(example[part])]
            assert not problems, f"{key} {example['name']!r} {part}: {problems}"


def test_a_broken_example_breaks_the_schema_check(committed: dict[str, Any]) -> None:
    registry: Registry[Any] = Registry().with_resource("urn:asyncapi", Resource(committed, specification=DRAFT7))
    schema = {"$ref": "urn:asyncapi#/components/messages/approvalCloudEventStructured/payload"}
    broken = {"specversion": "1.0", "id": "x", "source": "/s", "type": "sbworker.approval",
              "data": {"instance_id": "x", "approved": "yes", "approver": "a"}}
    assert [e.message for e in Draft7Validator(schema, registry=registry).iter_errors(broken)] == [
        "'yes' is not of type 'boolean'"]


def test_every_dead_letter_reason_is_documented(committed: dict[str, Any]) -> None:
    reasons = committed["components"]["messages"]["deadLettered"]["headers"]["properties"]["DeadLetterReason"]
    assert set(reasons["enum"]) == {str(r) for r in Reason} | set(asyncapi.BROKER_REASONS)
    assert all(f"{reason}: " in reasons["description"] for reason in reasons["enum"])


def test_the_payloads_are_the_listeners_schema_files(committed: dict[str, Any]) -> None:
    schemas = committed["components"]["schemas"]
    for kind in ("start", "approval", "event"):
        source = json.loads((HERE.parents[1] / "sbworker" / "core" / "schemas" / f"{kind}.schema.json").read_text())
        assert schemas[kind]["properties"].keys() == source["properties"].keys()
        assert schemas[kind]["required"] == source["required"] and schemas[kind]["additionalProperties"] is False
        assert schemas["instanceId"] == source["$defs"]["instanceId"]
    for name in ("ApprovalEvent", "PaymentReceived"):
        source = json.loads((HERE.parents[1] / "orchestrations" / "schemas" / f"{name}.schema.json").read_text())
        assert schemas[name]["properties"] == source["properties"] and schemas[name]["required"] == source["required"]


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_packages(HERE, "validating docs/asyncapi.yaml with @asyncapi/parser")


def parse_with_asyncapi_parser(node_bin: str, *paths: Path) -> list[dict[str, Any]]:
    result = subprocess.run([node_bin, str(HERE / "validate.mjs"), *map(str, paths)], cwd=HERE, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"validate.mjs failed:\n{result.stdout}\n{result.stderr}"
    return [json.loads(line) for line in result.stdout.strip().splitlines()[-len(paths):]]


def test_the_official_parser_validates_the_document_and_catches_a_broken_one(node: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"  # the check itself: a document the spec forbids is reported as an error
    broken.write_text(DOCUMENT.read_text(encoding="utf-8").replace("action: receive", "action: eat"))
    result, refused = parse_with_asyncapi_parser(node, DOCUMENT, broken)
    errors = [d for d in result["diagnostics"] if d["severity"] == 0]
    warnings = [d for d in result["diagnostics"] if d["severity"] == 1]
    assert result["parsed"] and not errors and not warnings, result["diagnostics"]
    assert result["document"]["version"] == asyncapi.ASYNCAPI_VERSION
    assert result["document"]["channels"] == ["requests", "deadLetters"]
    assert result["document"]["operations"] == [["receiveRequests", "receive"], ["deadLetter", "send"]]
    assert len(result["document"]["messages"]) == 10 and result["document"]["examples"] >= 10
    assert not refused["parsed"]
    assert any(d["severity"] == 0 and "action" in d["message"] for d in refused["diagnostics"])

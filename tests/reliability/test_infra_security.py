"""What tests/deploy/test_invariants.py does not already pin about infra/ security, checked over every Bicep file
(not module by module): no role beyond the Deploy issue's list anywhere, no SAS policy, no key in an output,
local auth off on every namespace, and no queue setting that would silently drop our re-enqueued approvals."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.deploy import deployfiles as df
from tests.deploy.test_invariants import (
    ACR_PULL,
    DURABLE_TASK_DATA_CONTRIBUTOR,
    DURABLE_TASK_DATA_READER,
    MONITORING_METRICS_PUBLISHER,
    SERVICE_BUS_DATA_OWNER,
    SERVICE_BUS_DATA_RECEIVER,
    SERVICE_BUS_DATA_SENDER,
)

BICEP_FILES = sorted(df.INFRA.rglob("*.bicep"))
# (principal, role) pairs the Deploy issue grants, plus the dashboard's own identity (issue 26: read roles, and the
# senders only with DASHBOARD_ALLOW_ACTIONS) and the worker's telemetry publisher — nothing else, in any file.
DASHBOARD_IDENTITY = "identity.properties.principalId"
GRANTED = {
    ("workerPrincipalId", SERVICE_BUS_DATA_RECEIVER),
    ("workerPrincipalId", SERVICE_BUS_DATA_SENDER),
    ("scalerPrincipalId", SERVICE_BUS_DATA_OWNER),
    ("userPrincipalId", SERVICE_BUS_DATA_SENDER),
    ("workerPrincipalId", DURABLE_TASK_DATA_CONTRIBUTOR),
    ("userPrincipalId", DURABLE_TASK_DATA_CONTRIBUTOR),
    ("pullPrincipalId", ACR_PULL),
    ("publisherPrincipalId", MONITORING_METRICS_PUBLISHER),
    (DASHBOARD_IDENTITY, ACR_PULL),
    (DASHBOARD_IDENTITY, DURABLE_TASK_DATA_READER),
    (DASHBOARD_IDENTITY, DURABLE_TASK_DATA_CONTRIBUTOR),
    (DASHBOARD_IDENTITY, SERVICE_BUS_DATA_RECEIVER),
    (DASHBOARD_IDENTITY, SERVICE_BUS_DATA_SENDER),
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _text(path: Path) -> str:
    return df.read_bicep(path)


def test_there_are_bicep_files_to_check() -> None:
    assert df.SERVICEBUS_BICEP in BICEP_FILES and df.MAIN_BICEP in BICEP_FILES


def test_no_role_assignment_anywhere_beyond_the_granted_list() -> None:
    seen: set[tuple[str, str]] = set()
    for path in BICEP_FILES:
        text = _text(path)
        variables = df.variables(text)
        for name, rtype in df.resources(text).items():
            if not rtype.startswith("Microsoft.Authorization/roleAssignments@"):
                continue
            _t, body = df.resource_body(text, name)
            role_expr = df.object_property(body, "roleDefinitionId")
            var = re.search(r"roleDefinitions',\s*(\w+)\)", role_expr)
            role = str(df.scalar(variables[var.group(1)])) if var else (GUID.search(role_expr) or [""])[0]
            pair = (df.object_property(body, "principalId"), role)
            assert pair in GRANTED, f"{path.name}:{name} grants {pair}, which the Deploy issue does not list"
            seen.add(pair)
    assert seen == GRANTED, f"missing grants: {GRANTED - seen}"


def test_no_role_definition_or_privileged_role_id_appears_at_all() -> None:
    privileged = {
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
        "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",  # User Access Administrator
    }
    allowed = {role for _p, role in GRANTED}
    for path in BICEP_FILES:
        text = _text(path)
        assert "Microsoft.Authorization/roleDefinitions@" not in text, f"{path.name}: no custom roles"
        for guid in GUID.findall(text):
            assert guid.lower() not in privileged, f"{path.name}: privileged role {guid}"
            assert guid.lower() in allowed, f"{path.name}: unexpected id {guid} (a role not in the Deploy issue?)"


def test_every_service_bus_namespace_has_local_auth_disabled_and_no_sas_policy() -> None:
    namespaces = 0
    for path in BICEP_FILES:
        text = _text(path)
        for name, rtype in df.resources(text).items():
            assert "/authorizationRules@" not in rtype, f"{path.name}:{name}: SAS policy ({rtype})"
            if rtype.startswith("Microsoft.ServiceBus/namespaces@") and not df.is_existing(text, name):
                namespaces += 1
                _t, body = df.resource_body(text, name)
                properties = df.object_property(body, "properties")
                assert df.scalar(df.object_property(properties, "disableLocalAuth")) is True, f"{path.name}:{name}"
    assert namespaces == 1


def test_no_output_or_app_setting_carries_a_key() -> None:
    for path in BICEP_FILES:
        text = _text(path)
        for line in re.findall(r"^output\s+.*$", text, re.MULTILINE):
            assert not re.search(r"listKeys|[Kk]ey\b|connectionString|SharedAccess|secret", line), line
        if "listKeys(" in text:
            # Only the Container Apps environment's log destination may read its own workspace's key.
            assert path.name == "monitoring.bicep", f"{path.name} reads keys with listKeys()"
            assert text.count("listKeys(") == 1 and "sharedKey: workspace.listKeys().primarySharedKey" in text
        assert "SharedAccessKey" not in text and "listConnectionStrings" not in text, path.name


def test_duplicate_detection_stays_off_because_reenqueued_approvals_reuse_the_message_id() -> None:
    """The listener re-enqueues an early approval as a scheduled copy with the *same* message id (so the id stays
    the deduplication key end to end). With duplicate detection on, Service Bus would drop that copy as a
    duplicate and the approval would be lost silently. Both the Bicep queue and the emulator config must keep it
    off; turning it on needs a listener change first."""
    _t, body = df.resource_body(_text(df.SERVICEBUS_BICEP), "queue")
    properties = df.object_property(body, "properties")
    assert df.scalar(df.object_property(properties, "requiresDuplicateDetection")) is False
    config = json.loads(df.EMULATOR_CONFIG.read_text(encoding="utf-8"))
    for namespace in config["UserConfig"]["Namespaces"]:
        for queue in namespace["Queues"]:
            assert queue["Properties"].get("RequiresDuplicateDetection", False) is False, queue["Name"]

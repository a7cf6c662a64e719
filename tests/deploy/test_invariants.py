"""Properties of the deployment files that matter for security and for running at all.

checkov has few rules for Service Bus, Durable Task and Container Apps in Bicep, so the ones this
service depends on are asserted here (and run in `make test`).
"""

from __future__ import annotations

import re

from tests.deploy import deployfiles as df

# Built-in role definition ids, from https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
SERVICE_BUS_DATA_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
SERVICE_BUS_DATA_SENDER = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
SERVICE_BUS_DATA_OWNER = "090c5cfd-751d-490a-894a-3ce6f1109419"
DURABLE_TASK_DATA_CONTRIBUTOR = "0ad04412-c4d5-4796-b79c-f76d14c8d402"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def _role_assignments(text: str) -> dict[str, tuple[str, str, str]]:
    """symbolic name → (role variable value, principal expression, scope expression)."""
    variables = df.variables(text)
    out = {}
    for name, rtype in df.resources(text).items():
        if not rtype.startswith("Microsoft.Authorization/roleAssignments@"):
            continue
        _t, body = df.resource_body(text, name)
        role_expr = df.object_property(body, "roleDefinitionId")
        role_var = re.search(r"'Microsoft.Authorization/roleDefinitions',\s*(\w+)\)", role_expr)
        assert role_var, f"{name}: roleDefinitionId must use subscriptionResourceId(..., <var>)"
        role_id = df.scalar(variables[role_var.group(1)])
        out[name] = (str(role_id), df.object_property(body, "principalId"), df.object_property(body, "scope"))
    return out


def test_service_bus_namespace_is_entra_only_and_tls12() -> None:
    text = df.read_bicep(df.SERVICEBUS_BICEP)
    _t, body = df.resource_body(text, "namespace")
    properties = df.object_property(body, "properties")
    assert df.scalar(df.object_property(properties, "disableLocalAuth")) is True
    assert df.scalar(df.object_property(properties, "minimumTlsVersion")) == "1.2"


def test_service_bus_roles_are_least_privilege() -> None:
    roles = _role_assignments(df.read_bicep(df.SERVICEBUS_BICEP))
    by_principal = {(principal, role) for role, principal, _scope in roles.values()}
    assert by_principal == {
        ("workerPrincipalId", SERVICE_BUS_DATA_RECEIVER),  # the worker receives
        ("workerPrincipalId", SERVICE_BUS_DATA_SENDER),  # and re-enqueues early approvals as scheduled copies
        ("scalerPrincipalId", SERVICE_BUS_DATA_OWNER),  # KEDA needs the Manage claim for the count
        ("userPrincipalId", SERVICE_BUS_DATA_SENDER),  # the deploying user publishes
    }
    assert all(scope == "queue" for _role, _p, scope in roles.values()), "Service Bus roles are scoped to the queue"


def test_durable_task_roles_and_scheduler() -> None:
    text = df.read_bicep(df.DTS_BICEP)
    roles = _role_assignments(text)
    assert {(p, r) for r, p, _s in roles.values()} == {
        ("workerPrincipalId", DURABLE_TASK_DATA_CONTRIBUTOR),
        ("userPrincipalId", DURABLE_TASK_DATA_CONTRIBUTOR),  # the dashboard requires it
    }
    assert all(scope == "taskHub" for _r, _p, scope in roles.values()), "DTS roles are scoped to the task hub"
    types = df.resources(text)
    assert types["scheduler"].startswith("Microsoft.DurableTask/schedulers@")
    assert types["taskHub"].startswith("Microsoft.DurableTask/schedulers/taskHubs@")
    assert df.param_default(text, "skuName") == "Consumption"
    assert re.search(r"@allowed\(\[\s*'Consumption'\s*'Dedicated'\s*\]\)\s*@description\([^)]*\)\s*param skuName", text)
    _t, body = df.resource_body(text, "scheduler")
    assert df.object_property(body, "ipAllowlist") == "ipAllowlist"


def test_registry_pull_is_by_identity() -> None:
    text = df.read_bicep(df.INFRA / "modules" / "registry.bicep")
    roles = _role_assignments(text)
    assert {(p, r) for r, p, _s in roles.values()} == {("pullPrincipalId", ACR_PULL)}
    _t, body = df.resource_body(text, "registry")
    assert df.scalar(df.object_property(body, "adminUserEnabled")) is False


def test_container_app_scales_with_identity_and_its_one_secret_is_app_insights() -> None:
    text = df.read_bicep(df.CONTAINERAPP_BICEP)
    rtype, body = df.resource_body(text, "app")
    api = rtype.split("@")[1]
    assert api >= "2025-01-01", "the scale rule `identity` field is in the stable API from 2025-01-01"
    # Everything else uses managed identity: the only secret is the App Insights connection string, read from the
    # component in this resource group (no key, no output carries it).
    assert body.count("secretRef") == 1 and body.count("value: appInsights.properties.ConnectionString") == 1
    env = df.container_env(text)
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"] == f"{df.SECRET_REF}appInsightsSecret"
    assert re.search(r"^resource appInsights 'Microsoft\.Insights/components@[\w-]+' existing = \{", text, re.M)
    configuration = df.object_property(body, "configuration")
    registries = df.object_property(configuration, "registries")
    assert df.object_property(registries, "identity") == "workerIdentityId"
    rules = df.object_property(df.object_property(body, "scale"), "rules")
    custom = df.object_property(rules, "custom")
    assert df.scalar(df.object_property(custom, "type")) == "azure-servicebus"
    assert df.object_property(custom, "identity") == "scalerIdentityId"
    assert "auth" not in custom and "connection" not in custom
    metadata = df.object_property(custom, "metadata")
    assert df.object_property(metadata, "queueName") == "queueName"
    assert df.object_property(metadata, "namespace") == "serviceBusNamespaceName"


def test_application_insights_is_workspace_based() -> None:
    text = df.read_bicep(df.INFRA / "modules" / "monitoring.bicep")
    rtype, body = df.resource_body(text, "appInsights")
    assert rtype.startswith("Microsoft.Insights/components@")
    properties = df.object_property(body, "properties")
    assert df.object_property(properties, "WorkspaceResourceId") == "workspace.id"
    assert df.scalar(df.object_property(properties, "IngestionMode")) == "LogAnalytics"
    main = df.read_bicep(df.MAIN_BICEP)
    assert "appInsightsName: monitoring.outputs.appInsightsName" in main


def test_dts_connection_string_uses_the_worker_identity() -> None:
    env = df.container_env(df.read_bicep(df.CONTAINERAPP_BICEP))
    assert env["DTS_CONNECTION_STRING"] == (
        "'Endpoint=${dtsEndpoint};Authentication=ManagedIdentity;ClientID=${workerClientId}'"
    )
    assert env["AZURE_CLIENT_ID"] == "workerClientId"


def test_main_outputs_and_azd_wiring() -> None:
    text = df.read_bicep(df.MAIN_BICEP)
    assert re.search(r"^targetScope\s*=\s*'subscription'", text, re.MULTILINE)
    outputs = set(re.findall(r"^output\s+(\w+)\s", text, re.MULTILINE))
    assert {
        "DTS_ENDPOINT", "TASKHUB_NAME", "DTS_DASHBOARD_URL", "SERVICEBUS_NAMESPACE", "SERVICEBUS_QUEUE",
        "AZURE_CONTAINER_REGISTRY_ENDPOINT",
    } <= outputs
    assert "'azd-service-name': 'worker'" in text
    azure_yaml = df.AZURE_YAML.read_text(encoding="utf-8")
    service = re.search(r"^services:\n  worker:\n((?:    .*\n|\s*\n)+)", azure_yaml, re.MULTILINE)
    assert service, "azure.yaml must define services.worker"
    assert re.search(r"^    host: containerapp$", service.group(1), re.MULTILINE)
    assert re.search(r"^    language: python$", service.group(1), re.MULTILINE)


def test_dockerfile_runtime_image() -> None:
    instructions = df.dockerfile_instructions(df.DOCKERFILE.read_text(encoding="utf-8"))
    froms = [args for name, args in instructions if name == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    for base in froms:
        image = base.split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", image), f"pin a slim python by version: {image}"
    final_stage = instructions[max(i for i, (n, _a) in enumerate(instructions) if n == "FROM"):]
    users = [args for name, args in final_stage if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage runs as a non-root user"
    for name, args in instructions:
        if name == "RUN":
            assert not re.search(r"\[(local|dev)\]|\.\[", args), "no local/dev extras in the image"
            assert not re.search(r"\b(gcc|build-essential|g\+\+)\b", args), "no compiler"
    entry = [args for name, args in final_stage if name == "ENTRYPOINT"]
    cmd = [args for name, args in final_stage if name == "CMD"]
    assert entry == ['["sbworker"]'] and cmd == ['["run"]'], "exec form so SIGTERM reaches sbworker"
    health = [args for name, args in final_stage if name == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "CMD [" in health[0]


def test_compose_wiring() -> None:
    text = df.COMPOSE_FILE.read_text(encoding="utf-8")
    volumes = df.compose_volumes(text, "servicebus-emulator")
    assert any(
        v.split(":")[0] == "./infra/servicebus-emulator/Config.json"
        and v.split(":")[1] == "/ServiceBus_Emulator/ConfigFiles/Config.json"
        for v in volumes
    ), volumes
    for service in ("servicebus-emulator", "sqledge"):
        block = "\n".join(line for _n, line in df.compose_service_block(text, service))
        assert "ACCEPT_EULA" in block
        assert "MSSQL_SA_PASSWORD" not in block, "the SA password comes from the env file, not the compose file"
    worker = "\n".join(line for _n, line in df.compose_service_block(text, "worker"))
    assert re.search(r"emulators-healthy:\s*\n\s*condition: service_completed_successfully", worker)

"""Properties of the deployment files that matter for security and for running at all.

checkov has few rules for Service Bus, Durable Task and Container Apps in Bicep, so the ones this
service depends on are asserted here (and run in `make test`).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy import deployfiles as df

# Built-in role definition ids, from https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
SERVICE_BUS_DATA_RECEIVER = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
SERVICE_BUS_DATA_SENDER = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
SERVICE_BUS_DATA_OWNER = "090c5cfd-751d-490a-894a-3ce6f1109419"
DURABLE_TASK_DATA_CONTRIBUTOR = "0ad04412-c4d5-4796-b79c-f76d14c8d402"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
DURABLE_TASK_DATA_READER = "d6a5505f-6ebb-45a4-896e-ac8274cfc0ac"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


def _role_assignments(text: str, source: str | None = None, *, has_user: bool = True
                      ) -> dict[str, tuple[str, str, str]]:
    """symbolic name → (role variable value, principal expression, scope expression); with a source, only the
    assignments deployed in that form."""
    variables = df.variables(text)
    out = {}
    for name, rtype in df.resources(text).items():
        if not rtype.startswith("Microsoft.Authorization/roleAssignments@"):
            continue
        condition = df.resource_condition(text, name)
        if source is not None and not df.deployed(text, condition, source, has_user=has_user):
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


# (principal, role, scope) of every Service Bus role assignment, per form: each on one entity, none on the namespace.
SERVICE_BUS_GRANTS = {
    "queue": {
        ("workerPrincipalId", SERVICE_BUS_DATA_RECEIVER, "queue"),  # the worker receives
        ("workerPrincipalId", SERVICE_BUS_DATA_SENDER, "queue"),  # and re-enqueues early approvals as scheduled copies
        ("scalerPrincipalId", SERVICE_BUS_DATA_OWNER, "queue"),  # KEDA needs the Manage claim for the count
        ("userPrincipalId", SERVICE_BUS_DATA_SENDER, "queue"),  # the deploying user publishes
    },
    "topic": {
        ("workerPrincipalId", SERVICE_BUS_DATA_RECEIVER, "workerSubscription"),  # the worker receives its subscription
        ("workerPrincipalId", SERVICE_BUS_DATA_RECEIVER, "retryQueue"),  # and its retry queue,
        ("workerPrincipalId", SERVICE_BUS_DATA_SENDER, "retryQueue"),  # where it schedules early approvals;
        ("workerPrincipalId", SERVICE_BUS_DATA_SENDER, "topic"),  # the CLI in the container publishes to the topic
        ("scalerPrincipalId", SERVICE_BUS_DATA_OWNER, "workerSubscription"),  # KEDA counts the subscription
        ("scalerPrincipalId", SERVICE_BUS_DATA_OWNER, "retryQueue"),  # and the retry queue
        ("userPrincipalId", SERVICE_BUS_DATA_SENDER, "topic"),  # the deploying user publishes
    },
}
# The resource type each scope must be: an entity, never the namespace.
ENTITY_TYPES = {
    "queue": "Microsoft.ServiceBus/namespaces/queues@",
    "retryQueue": "Microsoft.ServiceBus/namespaces/queues@",
    "topic": "Microsoft.ServiceBus/namespaces/topics@",
    "workerSubscription": "Microsoft.ServiceBus/namespaces/topics/subscriptions@",
}


@pytest.mark.parametrize("source", df.SOURCES)
def test_service_bus_roles_are_least_privilege(source: str) -> None:
    text = df.read_bicep(df.SERVICEBUS_BICEP)
    roles = _role_assignments(text, source)
    assert {(p, role, scope) for role, p, scope in roles.values()} == SERVICE_BUS_GRANTS[source]
    assert len(roles) == len(SERVICE_BUS_GRANTS[source]), "one assignment per grant"
    types = df.resources(text)
    variables = df.variables(text)
    for name, (role, principal, scope) in roles.items():
        assert types[scope].startswith(ENTITY_TYPES[scope]), f"{name} is scoped to {types[scope]}, not an entity"
        # The scope is deployed whenever the assignment is, and the assignment's name is derived from it.
        assert df.deployed(text, df.resource_condition(text, scope), source), f"{name}: {scope} is not deployed"
        _t, body = df.resource_body(text, name)
        guid = re.fullmatch(rf"guid\({scope}\.id, {principal}, (\w+RoleId)\)", df.object_property(body, "name"))
        assert guid and df.scalar(variables[guid.group(1)]) == role, f"{name}: name is not guid(scope, principal, role)"
    # Without a deploying user (CI), nothing is granted to one.
    assert all(p != "userPrincipalId" for _r, p, _s in _role_assignments(text, source, has_user=False).values())


def test_no_service_bus_data_role_on_the_namespace_in_any_form() -> None:
    text = df.read_bicep(df.SERVICEBUS_BICEP)
    scopes = {scope for _r, _p, scope in _role_assignments(text).values()}
    assert "namespace" not in scopes and scopes <= set(ENTITY_TYPES), scopes
    # Every assignment belongs to exactly one form.
    for source in df.SOURCES:
        assert set(_role_assignments(text, source)).isdisjoint(
            _role_assignments(text, next(s for s in df.SOURCES if s != source)))


@pytest.mark.parametrize("source", df.SOURCES)
def test_each_form_deploys_only_its_entities(source: str) -> None:
    text = df.read_bicep(df.SERVICEBUS_BICEP)
    entities = {name for name, rtype in df.resources(text).items()
                if rtype.startswith("Microsoft.ServiceBus/namespaces/")
                and df.deployed(text, df.resource_condition(text, name), source)}
    expected = {"queue": {"queue"}, "topic": {"topic", "workerSubscription", "retryQueue"}}[source]
    assert entities == expected
    assert df.param_default(df.read_bicep(df.MAIN_BICEP), "serviceBusSource") == "queue", "the queue stays the default"


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
    for source in df.SOURCES:
        assert df.container_env(text, source)["APPLICATIONINSIGHTS_CONNECTION_STRING"] == (
            f"{df.SECRET_REF}appInsightsSecret")


# The KEDA rules of each form: name → the entity metadata it counts (queue, or topic + subscription).
SCALE_RULES = {
    "queue": {"servicebus-queue": {"queueName": "queueName"}},
    "topic": {
        "servicebus-subscription": {"topicName": "topicName", "subscriptionName": "subscriptionName"},
        "servicebus-retry-queue": {"queueName": "retryQueueName"},  # approvals waiting for their instance
    },
}


@pytest.mark.parametrize("source", df.SOURCES)
def test_container_app_scales_on_every_entity_it_reads_with_the_scaler_identity(source: str) -> None:
    text = df.read_bicep(df.CONTAINERAPP_BICEP)
    rules = {}
    for rule in df.scale_rules(text, source):
        custom = df.object_property(rule, "custom")
        assert df.scalar(df.object_property(custom, "type")) == "azure-servicebus"
        assert df.object_property(custom, "identity") == "scalerIdentityId"
        assert "auth" not in custom and "connection" not in custom
        metadata = df.object_property(custom, "metadata")
        assert df.object_property(metadata, "namespace") == "serviceBusNamespaceName"
        assert df.object_property(metadata, "messageCount") == "string(messagesBeforeScaleOut)"
        entity = {key: df.object_property(metadata, key) for key in ("queueName", "topicName", "subscriptionName")
                  if re.search(rf"^\s*{key}\s*:", metadata, re.MULTILINE)}
        rules[df.scalar(df.object_property(rule, "name"))] = entity
    assert rules == SCALE_RULES[source]
    # Session mode: KEDA counts messages, not sessions; a replica takes MAX_CONCURRENT_SESSIONS sessions' worth.
    assert df.variable(text, "messagesBeforeScaleOut") == (
        "requiresSession ? maxConcurrentSessions * messagesPerSession : messagesPerReplica")
    assert df.container_env(text, source)["MAX_CONCURRENT_SESSIONS"] == "string(maxConcurrentSessions)"


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
        "SERVICEBUS_TOPIC", "SERVICEBUS_SUBSCRIPTION", "SERVICEBUS_RETRY_QUEUE", "AZURE_CONTAINER_REGISTRY_ENDPOINT",
    } <= outputs
    # azd maps its environment onto the parameters: `azd env set SERVICEBUS_SOURCE topic` selects the topic form.
    parameters = json.loads(df.MAIN_PARAMETERS.read_text(encoding="utf-8"))["parameters"]
    assert parameters["serviceBusSource"] == {"value": "${SERVICEBUS_SOURCE=queue}"}
    assert set(parameters) <= set(df.params(text)), "main.parameters.json sets a parameter main.bicep lacks"
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


def _allowed(text: str, param: str) -> tuple[str, ...]:
    match = re.search(rf"@allowed\(\[((?:\s*'[^']*')+)\s*\]\)\s*(?:@\w+\(.*\)\s*)*param\s+{param}\b", text)
    assert match, f"param {param} has no @allowed list"
    return tuple(re.findall(r"'([^']*)'", match.group(1)))


def test_both_forms_wire_through_main_and_the_modules() -> None:
    """What `bicep build` would refuse, checked without it (there is no Bicep compiler in CI): every module call
    passes only parameters the module declares and every one it requires, every module output main reads exists,
    and the source parameter allows the same two forms everywhere."""
    main = df.read_bicep(df.MAIN_BICEP)
    calls = df.modules(main)
    for name, (path, body) in calls.items():
        module = df.read_bicep(df.INFRA / path)
        declared = set(re.findall(r"^param\s+(\w+)\s", module, re.MULTILINE))
        required = {p for p in declared if not re.search(rf"^param\s+{p}\s+\w+\s*=", module, re.MULTILINE)}
        passed = set(df.object_keys(df.object_property(body, "params")))
        assert passed <= declared, f"module {name} gets undeclared parameters {sorted(passed - declared)}"
        assert required <= passed, f"module {name} misses required parameters {sorted(required - passed)}"
    for module_name, output in re.findall(r"\b(\w+)\.outputs\.(\w+)", main):
        module = df.read_bicep(df.INFRA / calls[module_name][0])
        assert re.search(rf"^output\s+{output}\s", module, re.MULTILINE), f"{module_name} has no output {output}"
    servicebus, containerapp = df.read_bicep(df.SERVICEBUS_BICEP), df.read_bicep(df.CONTAINERAPP_BICEP)
    assert _allowed(main, "serviceBusSource") == _allowed(servicebus, "source") == df.SOURCES
    assert _allowed(containerapp, "serviceBusSource") == df.SOURCES
    _t, worker = calls["worker"]
    assert "serviceBusSource: serviceBus.outputs.source" in worker
    _t, service_bus = calls["serviceBus"]
    assert "source: serviceBusSource" in service_bus
    # The module outputs the deployed form's names and '' for the other's (the code reads '' as unset).
    for output, expected in (("queueName", "isTopic ? '' : queueName"), ("topicName", "isTopic ? topicName : ''"),
                             ("subscriptionName", "isTopic ? subscriptionName : ''"),
                             ("retryQueueName", "isTopic ? retryQueueName : ''")):
        assert re.search(rf"^output\s+{output}\s+string\s*=\s*{re.escape(expected)}$", servicebus, re.MULTILINE)


def test_duplicate_detection_is_off_wherever_a_reenqueued_approval_can_land() -> None:
    """A re-enqueued approval (and a DLQ resubmit) keeps its message id. In topic form it lands on the retry
    queue, and a publisher's resend on the topic: duplicate detection on either would drop it silently."""
    text = df.read_bicep(df.SERVICEBUS_BICEP)
    for name in ("queue", "retryQueue", "topic"):
        _t, body = df.resource_body(text, name)
        properties = df.object_property(body, "properties")
        assert df.scalar(df.object_property(properties, "requiresDuplicateDetection")) is False, name
    config = json.loads(df.EMULATOR_CONFIG.read_text(encoding="utf-8"))
    for namespace in config["UserConfig"]["Namespaces"]:
        for entity in namespace.get("Queues", []) + namespace.get("Topics", []):
            assert entity["Properties"].get("RequiresDuplicateDetection", False) is False, entity["Name"]

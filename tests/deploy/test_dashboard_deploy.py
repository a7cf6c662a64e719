"""The dashboard's deployment (infra/modules/dashboard.bicep), checked without a Bicep compiler: off by default, its
own container app behind Container Apps authentication with Entra ID, arguments the dashboard accepts, read roles
unless actions are allowed, and an environment that loads; and Application Insights by Entra ID only."""

from __future__ import annotations

import re

import pytest

from sbworker import cli
from sbworker.core import config
from sbworker.dashboard import access
from tests.deploy import deployfiles as df
from tests.deploy.test_consistency import BICEP_SAMPLES, _evaluate, _main_param
from tests.deploy.test_invariants import (
    ACR_PULL,
    DURABLE_TASK_DATA_CONTRIBUTOR,
    DURABLE_TASK_DATA_READER,
    MONITORING_METRICS_PUBLISHER,
    SERVICE_BUS_DATA_RECEIVER,
    SERVICE_BUS_DATA_SENDER,
)

DASHBOARD_BICEP = df.INFRA / "modules" / "dashboard.bicep"
MONITORING_BICEP = df.INFRA / "modules" / "monitoring.bicep"


SAMPLES = {**BICEP_SAMPLES, "clientId": "00000000-0000-0000-0000-0000000000d5",
           "host": "ca-dashboard-sample.kindhill-123.westus2.azurecontainerapps.io"}


@pytest.fixture(scope="module")
def text() -> str:
    return df.read_bicep(DASHBOARD_BICEP)


def _condition_holds(condition: str | None, *, topic: bool, actions: bool) -> bool:
    """`&&` of `[!]isTopic` and `[!]allowActions`, the only conditions the module uses."""
    if condition is None:
        return True
    values = {"isTopic": topic, "allowActions": actions}
    result = True
    for term in condition.split("&&"):
        match = re.fullmatch(r"\s*(!?)\s*(isTopic|allowActions)\s*", term)
        assert match, f"unexpected condition {condition!r}"
        result = result and (values[match.group(2)] != bool(match.group(1)))
    return result


def _grants(text: str, *, topic: bool, actions: bool) -> set[tuple[str, str, str]]:
    """(principal, role id, scope) of every role assignment deployed in that case."""
    variables = df.variables(text)
    found = set()
    for name, rtype in df.resources(text).items():
        if not rtype.startswith("Microsoft.Authorization/roleAssignments@"):
            continue
        if not _condition_holds(df.resource_condition(text, name), topic=topic, actions=actions):
            continue
        _t, body = df.resource_body(text, name)
        role = re.search(r"roleDefinitions',\s*(\w+)\)", df.object_property(body, "roleDefinitionId"))
        assert role, name
        found.add((df.object_property(body, "principalId"), str(df.scalar(variables[role.group(1)])),
                   df.object_property(body, "scope")))
    return found


def test_the_dashboard_is_off_by_default_and_a_container_app_of_its_own() -> None:
    main = df.read_bicep(df.MAIN_BICEP)
    assert df.param_default(main, "deployDashboard") is False
    assert df.module_condition(main, "dashboard") == "deployDashboard"
    path, body = df.modules(main)["dashboard"]
    assert path == "modules/dashboard.bicep"
    assert re.search(r"name: '\$\{abbrs\.app\}dashboard-\$\{token\}'", body)
    assert re.search(r"^output DASHBOARD_URL string = deployDashboard \? dashboard\.outputs\.url : ''$", main,
                     re.MULTILINE)


def test_it_runs_the_image_as_the_dashboard_behind_https_with_the_arguments_the_command_takes(text: str) -> None:
    _t, body = df.resource_body(text, "app")
    ingress = df.object_property(df.object_property(body, "properties"), "configuration")
    ingress = df.object_property(ingress, "ingress")
    port = df.scalar(df.variable(text, "port"))
    assert df.scalar(df.object_property(ingress, "external")) is True
    assert df.object_property(ingress, "targetPort") == "port" and port == 8082
    assert df.scalar(df.object_property(ingress, "allowInsecure")) is False
    [container] = re.findall(r"name: 'dashboard'.*?args: (\[.*?\])", body, re.DOTALL)
    raw = [item.strip() for item in container.strip("[]").splitlines() if item.strip()]
    assert raw[-1] == "allowActions ? '--allow-actions' : '--read-only'"
    values = {**SAMPLES, "port": str(port)}
    for read_only in (True, False):
        args = [_evaluate(item, df.params(text), {}, values) for item in raw[:-1]] + \
            ["--read-only" if read_only else "--allow-actions"]
        parsed = cli.build_parser().parse_args(args)
        assert parsed.command == "dashboard" and parsed.auth == "entra" and parsed.allow_remote
        rules = access.configure(host=parsed.host, allow_remote=parsed.allow_remote, auth=parsed.auth, token=None,
                                 extra_hosts=parsed.allowed_host, actions=parsed.allow_actions,
                                 action_role=parsed.action_role)
        assert rules.mode == "entra" and rules.host_allowed(SAMPLES["host"]) and not rules.host_allowed("evil.io")
        assert rules.actions is (not read_only) and rules.action_role == "Dashboard.Operator"
    assert df.variable(text, "host") == "'${name}.${environmentDefaultDomain}'"


def test_entra_id_signs_everyone_in_before_the_container(text: str) -> None:
    rtype, body = df.resource_body(text, "auth")
    assert rtype.startswith("Microsoft.App/containerApps/authConfigs@") and "parent: app" in body
    assert df.scalar(df.object_property(body, "name")) == "current"
    properties = df.object_property(body, "properties")
    assert df.scalar(df.object_property(df.object_property(properties, "platform"), "enabled")) is True
    validation = df.object_property(properties, "globalValidation")
    assert df.scalar(df.object_property(validation, "unauthenticatedClientAction")) == "RedirectToLoginPage"
    assert df.scalar(df.object_property(df.object_property(properties, "httpSettings"), "requireHttps")) is True
    aad = df.object_property(df.object_property(properties, "identityProviders"), "azureActiveDirectory")
    assert df.scalar(df.object_property(aad, "enabled")) is True
    registration = df.object_property(aad, "registration")
    assert df.object_property(registration, "clientSecretSettingName") == "authSecretName"
    _t, app = df.resource_body(text, "app")
    secrets = df.object_property(df.object_property(df.object_property(app, "properties"), "configuration"),
                                 "secrets")
    assert "name: authSecretName" in secrets and "value: entraClientSecret" in secrets
    assert re.search(r"@secure\(\)\s*@description\([^)]*\)\s*param entraClientSecret string", text)


@pytest.mark.parametrize("topic", [False, True], ids=["queue", "topic"])
def test_read_roles_unless_actions_are_allowed(text: str, topic: bool) -> None:
    me = "identity.properties.principalId"
    pull = (me, ACR_PULL, "registry")
    entities = {(me, SERVICE_BUS_DATA_RECEIVER, e) for e in (("subscription", "retryQueue") if topic else ("queue",))}
    assert _grants(text, topic=topic, actions=False) == {pull, (me, DURABLE_TASK_DATA_READER, "taskHub"),
                                                        *entities}
    senders = {(me, SERVICE_BUS_DATA_SENDER, e) for e in (("topic", "retryQueue") if topic else ("queue",))}
    assert _grants(text, topic=topic, actions=True) == {pull, (me, DURABLE_TASK_DATA_CONTRIBUTOR, "taskHub"),
                                                       *entities, *senders}


@pytest.mark.parametrize("source", ["queue", "topic"])
def test_its_environment_loads_with_its_own_managed_identity(text: str, source: str) -> None:
    raw = df.container_env(text, source)
    samples = dict(SAMPLES)
    for name in ("queueName", "topicName", "subscriptionName", "retryQueueName"):
        samples[name] = _main_param(name)
    variables = {k: v for k, v in df.variables(text).items() if k != "clientId"}  # known at deploy time: a sample
    env = {name: _evaluate(value, df.params(text), variables, samples) for name, value in raw.items()}
    settings = config.load(env)
    assert settings.dts.auth is config.Auth.MANAGED_IDENTITY
    assert settings.dts.client_id == SAMPLES["clientId"] != BICEP_SAMPLES["workerClientId"]
    assert settings.servicebus.access == config.EntraId(BICEP_SAMPLES["serviceBusNamespaceFqdn"],
                                                        config.Auth.MANAGED_IDENTITY,
                                                        SAMPLES["clientId"])
    assert (settings.servicebus.source.topic is not None) == (source == "topic")


def test_application_insights_takes_entra_id_only_and_the_worker_may_publish() -> None:
    text = df.read_bicep(MONITORING_BICEP)
    _t, body = df.resource_body(text, "appInsights")
    assert df.scalar(df.object_property(df.object_property(body, "properties"), "DisableLocalAuth")) is True
    _t, grant = df.resource_body(text, "publisher")
    assert df.object_property(grant, "scope") == "appInsights"
    assert df.object_property(grant, "principalId") == "publisherPrincipalId"
    assert df.scalar(df.variable(text, "monitoringMetricsPublisherRoleId")) == MONITORING_METRICS_PUBLISHER
    main = df.read_bicep(df.MAIN_BICEP)
    _p, monitoring = df.modules(main)["monitoring"]
    assert "publisherPrincipalId: identity.outputs.workerPrincipalId" in monitoring
    worker_env = df.container_env(df.read_bicep(df.CONTAINERAPP_BICEP), "queue")
    assert worker_env["APPLICATIONINSIGHTS_AUTHENTICATION"] == "'ManagedIdentity'"

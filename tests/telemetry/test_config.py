"""The OTEL_* variables and APPLICATIONINSIGHTS_CONNECTION_STRING: accepted values, one-line errors, and what
setup builds (nothing of tracing unless an exporter is configured)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sbworker.core.errors import ConfigError
from sbworker.observability import config as observability_config
from tests.support.processes import REPO, sbworker, sbworker_env

APP_INSIGHTS = ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/")


def test_nothing_configured_means_metrics_only() -> None:
    settings = observability_config.load({})
    assert settings.enabled and not settings.tracing
    assert settings.otlp_traces_endpoint is None and settings.azure_monitor_connection_string is None


def test_the_otlp_endpoint_gets_the_signal_paths_and_signal_variables_win() -> None:
    settings = observability_config.load({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                                          "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://other:9000/m"})
    assert settings.tracing
    assert settings.otlp_traces_endpoint == "http://collector:4318/v1/traces"
    assert settings.otlp_metrics_endpoint == "http://other:9000/m"


def test_exporters_can_be_switched_off_per_signal() -> None:
    settings = observability_config.load({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                          "OTEL_TRACES_EXPORTER": "none"})
    assert not settings.tracing and settings.otlp_metrics_endpoint == "http://c:4318/v1/metrics"


def test_application_insights_alone_turns_tracing_on_and_headers_are_secrets() -> None:
    settings = observability_config.load({"APPLICATIONINSIGHTS_CONNECTION_STRING": APP_INSIGHTS,
                                          "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t-value,x-tenant=a%20b"})
    assert settings.tracing
    assert settings.otlp_headers == (("api-key", "s3cr3t-value"), ("x-tenant", "a b"))
    assert "s3cr3t-value" in settings.secrets()


ENTRA_EXPORTERS = """
from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter, AzureMonitorTraceExporter
from sbworker.observability import config, telemetry
settings = config.load({"APPLICATIONINSIGHTS_CONNECTION_STRING": %r,
                        "APPLICATIONINSIGHTS_AUTHENTICATION": "ManagedIdentity", "AZURE_CLIENT_ID": "client-aa"})
options = telemetry._azure_monitor_auth(settings)
for exporter in (AzureMonitorTraceExporter, AzureMonitorMetricExporter):
    built = exporter(connection_string=settings.azure_monitor_connection_string, **options)
    print(exporter.__name__, type(built._credential).__name__, built._credential is options["credential"])
"""


def test_application_insights_by_entra_id_gives_both_exporters_the_managed_identity() -> None:
    """With local authentication disabled on the resource (the deployment does), the instrumentation key is
    refused: the exporters must sign in with the managed identity, the user-assigned one AZURE_CLIENT_ID names.
    (In a process of its own: the exporters set process-wide logging on creation.)"""
    settings = observability_config.load({"APPLICATIONINSIGHTS_CONNECTION_STRING": APP_INSIGHTS,
                                          "APPLICATIONINSIGHTS_AUTHENTICATION": "managedidentity"})
    assert settings.azure_monitor_auth is not None and settings.azure_monitor_auth.value == "ManagedIdentity"
    done = subprocess.run([sys.executable, "-c", ENTRA_EXPORTERS % APP_INSIGHTS], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                                      "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["AzureMonitorTraceExporter ManagedIdentityCredential True",
                                           "AzureMonitorMetricExporter ManagedIdentityCredential True"]
    from sbworker.observability import telemetry

    assert telemetry._azure_monitor_auth(observability_config.load(
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": APP_INSIGHTS})) == {}  # the key, as before
    with pytest.raises(ConfigError) as alone:
        observability_config.load({"APPLICATIONINSIGHTS_AUTHENTICATION": "ManagedIdentity"})
    assert alone.value.variable == "APPLICATIONINSIGHTS_AUTHENTICATION" and "set both" in alone.value.problem


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("APPLICATIONINSIGHTS_AUTHENTICATION", "Key", "unsupported authentication"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "expected an http:// or https:// URL"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:99999", "invalid port"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[", "invalid port or host"),
    ("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=k;IngestionEndpoint=https://[",
     "IngestionEndpoint must be"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "only http/protobuf is supported"),
    ("OTEL_TRACES_SAMPLER", "sometimes", "expected one of always_on"),
    ("OTEL_TRACES_EXPORTER", "jaeger", "expected otlp or none"),
    ("OTEL_SDK_DISABLED", "yes", "expected true or false"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0", "must be between"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "api-key", "expected key=value pairs"),
    ("APPLICATIONINSIGHTS_CONNECTION_STRING", "IngestionEndpoint=https://x/", "missing InstrumentationKey="),
])
def test_a_bad_value_is_refused_naming_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        observability_config.load({variable: value})
    assert caught.value.variable == variable and problem in caught.value.problem


def test_a_ratio_sampler_takes_its_argument_in_range() -> None:
    assert observability_config.load({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                             "OTEL_TRACES_SAMPLER_ARG": "0.25"}).sampler_arg == 0.25
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        observability_config.load({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"})


def test_the_command_line_refuses_a_bad_value_in_one_line_with_exit_2() -> None:
    env = sbworker_env("Endpoint=sb://localhost:1;SharedAccessKeyName=k;SharedAccessKey=v",
                    "Endpoint=http://localhost:1;Authentication=None",
                    OTEL_EXPORTER_OTLP_HEADERS="leaked-api-key")
    result = sbworker("run", env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: OTEL_EXPORTER_OTLP_HEADERS: expected key=value pairs separated by ','"]
    assert "leaked-api-key" not in result.stderr


def test_without_an_exporter_no_tracing_code_is_even_imported() -> None:
    probe = ("import sys; from sbworker.observability import config, telemetry; "
             "t = telemetry.setup(config.load({})); "
             "print(t.tracer is None, 'opentelemetry.sdk.trace' in sys.modules, "
             "'sbworker.observability.tracing' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "False", "False"], result.stderr

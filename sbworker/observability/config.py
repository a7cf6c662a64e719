"""The OpenTelemetry variables (OTEL_*) and Application Insights' two → one frozen TelemetrySettings.

Read with the same rules as every other setting (sbworker/core/config.py): a bad value is refused in one line
naming the variable, where the OpenTelemetry SDK would log a warning and quietly send nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from sbworker.core import config
from sbworker.core.errors import ConfigError

#: Read wherever the service runs in Azure: deployment files must set it (tests/deploy checks, with
#: sbworker.core.config.ENV_VARS).
ENV_VARS: tuple[str, ...] = ("APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION")
#: The OpenTelemetry SDK's standard variables that this service acts on (validated here, applied in
#: sbworker/observability/telemetry.py). They are optional everywhere, so they are not in ENV_VARS: deployments set
#: only the ones they need (docker-compose points OTEL_EXPORTER_OTLP_ENDPOINT at its trace viewer).
OTEL_ENV_VARS: tuple[str, ...] = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_METRIC_EXPORT_INTERVAL",
)
DEFAULT_SERVICE_NAME = "sbworker"
# The samplers the SDK knows by name; the ratio ones take OTEL_TRACES_SAMPLER_ARG in [0, 1] (default 1.0).
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")


@dataclass(frozen=True)
class TelemetrySettings:
    """Where traces and metrics go. With no exporter configured, no span is ever built
    (see sbworker/observability/tracing.py)."""

    enabled: bool = True  # False: OTEL_SDK_DISABLED=true, no metrics either (and no /metrics)
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()
    otlp_traces_endpoint: str | None = None  # full URL, .../v1/traces
    otlp_metrics_endpoint: str | None = None  # full URL, .../v1/metrics
    otlp_headers: tuple[tuple[str, str], ...] = ()
    azure_monitor_connection_string: str | None = None
    # How the exporter signs in: None = the connection string's instrumentation key (local authentication);
    # ManagedIdentity / DefaultAzure = an Entra ID token, for a resource with local authentication disabled.
    azure_monitor_auth: config.Auth | None = None
    azure_monitor_client_id: str | None = None
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    metric_export_interval_ms: int = 60_000

    @property
    def tracing(self) -> bool:
        """Spans are built only when some exporter will receive them."""
        return self.enabled and bool(self.otlp_traces_endpoint or self.azure_monitor_connection_string)

    def secrets(self) -> list[str]:
        """OTLP headers usually carry an API key: never in a log line."""
        return [value for _key, value in self.otlp_headers if value]


def load(environ: Mapping[str, str] | None = None) -> TelemetrySettings:
    """The OTEL_* variables we act on, plus APPLICATIONINSIGHTS_CONNECTION_STRING, checked the way the SDK reads
    them (the environment by default)."""
    env = os.environ if environ is None else environ
    disabled = config.optional(env, "OTEL_SDK_DISABLED")
    if disabled is not None and disabled.lower() not in ("true", "false"):
        raise ConfigError("OTEL_SDK_DISABLED", f"expected true or false, got {disabled!r}")
    protocol = config.optional(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is not None and protocol != "http/protobuf":
        raise ConfigError("OTEL_EXPORTER_OTLP_PROTOCOL", f"only http/protobuf is supported, got {protocol!r}")
    traces_on = _exporter_choice(env, "OTEL_TRACES_EXPORTER")
    metrics_on = _exporter_choice(env, "OTEL_METRICS_EXPORTER")
    base = _otlp_url(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = _otlp_url(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (base and f"{base.rstrip('/')}/v1/traces")
    metrics = _otlp_url(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (base and f"{base.rstrip('/')}/v1/metrics")
    sampler = (config.optional(env, "OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
    if sampler not in SAMPLERS:
        raise ConfigError("OTEL_TRACES_SAMPLER", f"expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    sampler_arg = config.number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0, low=0.0, high=1.0) if "ratio" in sampler else 1.0
    return TelemetrySettings(
        enabled=(disabled or "false").lower() != "true",
        service_name=config.optional(env, "OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        resource_attributes=_pairs(env, "OTEL_RESOURCE_ATTRIBUTES"),
        otlp_traces_endpoint=traces if traces_on else None,
        otlp_metrics_endpoint=metrics if metrics_on else None,
        otlp_headers=_pairs(env, "OTEL_EXPORTER_OTLP_HEADERS"),
        azure_monitor_connection_string=_app_insights(env),
        azure_monitor_auth=_app_insights_auth(env),
        azure_monitor_client_id=config.optional(env, "AZURE_CLIENT_ID"),
        sampler=sampler,
        sampler_arg=sampler_arg,
        metric_export_interval_ms=config.integer(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000, low=100, high=3_600_000),
    )


def _exporter_choice(env: Mapping[str, str], name: str) -> bool:
    """`otlp` (the default) or `none`: we ship only the OTLP/HTTP exporter (and Azure Monitor's own)."""
    value = (config.optional(env, name) or "otlp").lower()
    if value not in ("otlp", "none"):
        raise ConfigError(name, f"expected otlp or none, got {value!r}")
    return value == "otlp"


def _otlp_url(env: Mapping[str, str], name: str) -> str | None:
    raw = config.optional(env, name)
    if raw is None:
        return None
    parts = config.url_parts(raw, name, f"invalid port or host in {raw!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected an http:// or https:// URL, got {raw!r}")
    return raw


def _pairs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key2=value2` (W3C baggage form, values percent-encoded), as the OTel SDK reads it."""
    raw = config.optional(env, name)
    if raw is None:
        return ()
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Never echo the item: OTEL_EXPORTER_OTLP_HEADERS usually holds an API key.
            raise ConfigError(name, "expected key=value pairs separated by ','")
        pairs.append((unquote(key.strip()), unquote(value.strip())))
    return tuple(pairs)


def _app_insights(env: Mapping[str, str]) -> str | None:
    name = "APPLICATIONINSIGHTS_CONNECTION_STRING"
    raw = config.optional(env, name)
    if raw is None:
        return None
    fields = config.key_values(raw, name)
    if not fields.get("instrumentationkey"):
        raise ConfigError(name, "missing InstrumentationKey= (copy the connection string from Application Insights)")
    ingestion = fields.get("ingestionendpoint")
    problem = "IngestionEndpoint must be an http:// or https:// URL"
    if ingestion and config.url_parts(ingestion, name, problem).scheme not in ("http", "https"):
        raise ConfigError(name, problem)
    return raw


def _app_insights_auth(env: Mapping[str, str]) -> config.Auth | None:
    """APPLICATIONINSIGHTS_AUTHENTICATION: ManagedIdentity (AZURE_CLIENT_ID picks a user-assigned one) or
    DefaultAzure, for an Application Insights resource that accepts Entra ID only (DisableLocalAuth)."""
    name = "APPLICATIONINSIGHTS_AUTHENTICATION"
    raw = config.optional(env, name)
    if raw is None:
        return None
    auth = config.parse_auth(raw, name, allowed=(config.Auth.MANAGED_IDENTITY, config.Auth.DEFAULT_AZURE))
    if config.optional(env, "APPLICATIONINSIGHTS_CONNECTION_STRING") is None:
        raise ConfigError(name, "is set, but APPLICATIONINSIGHTS_CONNECTION_STRING is not: set both")
    return auth

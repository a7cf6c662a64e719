"""From TelemetrySettings to OpenTelemetry providers and exporters: the one place telemetry is set up.

- Metrics are recorded whenever telemetry is enabled (the default), for `/metrics`; they are pushed over
  OTLP/HTTP and to Azure Monitor when those are configured.
- Traces exist only when an exporter is configured (OTLP/HTTP, Azure Monitor, or both). The tracer provider is
  then made global, because the durabletask SDK builds its client and worker spans from the global provider.
- With OTEL_SDK_DISABLED=true nothing is imported or built at all.

Everything from OpenTelemetry is imported inside these functions, so a process that never calls them never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sbworker.observability.config import TelemetrySettings
from sbworker.observability.metrics import NOOP, Metrics
from sbworker.observability.observer import Observer

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.sampling import Sampler

    from sbworker.observability.recent_spans import RecentSpans
    from sbworker.observability.tracing import MessageTracer

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_MILLIS = 5_000


@dataclass
class Telemetry:
    """What the service hands to the listener and the health server. The default is telemetry switched off."""

    metrics: Metrics = NOOP
    # (queue or topic, subscription) → tracer; None: no spans at all
    tracer: Callable[[str, str | None], MessageTracer] | None = None
    prometheus: Callable[[], str] | None = None  # the text of /metrics; None: /metrics is 404
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    def observer(self, destination: str, subscription: str | None = None) -> Observer:
        """What one listener reports through: `destination` is the queue or, with `subscription`, the topic."""
        return Observer(self.metrics, self.tracer(destination, subscription) if self.tracer is not None else None)

    def shutdown(self) -> None:
        """Flush what is buffered (the last spans and a final metrics push) and stop the exporters."""
        for close in reversed(self._closers):
            try:
                close()
            except Exception as error:  # an unreachable collector must not turn a clean exit into a crash
                log.warning("telemetry shutdown: %s", error)
        self._closers.clear()


def setup(settings: TelemetrySettings, *, metrics: bool = True, scrape: bool = True,
          recent_spans: RecentSpans | None = None) -> Telemetry:
    """Build the providers that `settings` asks for; `metrics=False` for short-lived commands (`sbworker publish`).

    `scrape=False` when nothing serves /metrics (HEALTH_PORT=0): metrics are then recorded for the push exporters
    alone, and with none configured not at all, so the listener holds the no-op Metrics. Recording what no reader
    could ever export cost 4-5% of the listener's CPU per message (two OpenTelemetry histogram recordings).
    `recent_spans` (`sbworker dev`) turns tracing on without any exporter configured: spans stay in that memory.
    """
    if not settings.enabled:
        return Telemetry()
    telemetry = Telemetry()
    tracing = settings.tracing or recent_spans is not None
    pushed = bool(settings.otlp_metrics_endpoint or settings.azure_monitor_connection_string)
    metrics = metrics and (scrape or pushed)
    if tracing or metrics:  # else the OpenTelemetry SDK is not even imported (a `publish` without exporters)
        resource = _resource(settings)
        if tracing:
            telemetry.tracer = _tracing(settings, resource, telemetry, recent_spans)
        if metrics:
            _metrics(settings, resource, telemetry, scrape)
    metric_targets = ", ".join(t for t in ("/metrics" if scrape else "", _targets(settings.otlp_metrics_endpoint,
                                                                                  settings)) if t)
    trace_targets = ", ".join(t for t in (_targets(settings.otlp_traces_endpoint, settings),
                                          "memory" if recent_spans is not None else "") if t)
    # The service says where its telemetry goes; a one-shot command (`sbworker publish`) says nothing unless asked.
    log.log(logging.INFO if metrics else logging.DEBUG, "telemetry: traces %s; metrics %s", trace_targets or "off",
            metric_targets if metrics else "off")
    return telemetry


def spans_recorded() -> bool:
    """Whether a tracer provider is installed (by `setup`, or by whoever embeds us), so that the spans the
    durabletask SDK builds from the global provider go anywhere. Without one, each of its calls still built a span
    that nothing recorded: 2.5% of the listener's CPU from a backlog (py-spy, 2026-12-06)."""
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _targets(otlp: str | None, settings: TelemetrySettings) -> str:
    """Where a signal goes, for the start-up log line (endpoints only: headers and the connection string hold keys)."""
    targets = [f"OTLP {otlp}"] if otlp else []
    if settings.azure_monitor_connection_string:
        targets.append("Azure Monitor")
    return ", ".join(targets)


def _resource(settings: TelemetrySettings) -> Resource:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({**dict(settings.resource_attributes), "service.name": settings.service_name})


def _sampler(settings: TelemetrySettings) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(settings.sampler_arg)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[settings.sampler]


def _tracing(settings: TelemetrySettings, resource: Resource, telemetry: Telemetry,
             recent_spans: RecentSpans | None = None) -> Callable[[str, str | None], MessageTracer]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from sbworker.observability.tracing import SCOPE, MessageTracer

    provider = TracerProvider(resource=resource, sampler=_sampler(settings))
    if settings.otlp_traces_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=settings.otlp_traces_endpoint, headers=dict(settings.otlp_headers))))
    if settings.azure_monitor_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        provider.add_span_processor(BatchSpanProcessor(AzureMonitorTraceExporter(
            connection_string=settings.azure_monitor_connection_string, **_azure_monitor_auth(settings))))
    if recent_spans is not None:
        provider.add_span_processor(BatchSpanProcessor(recent_spans, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    telemetry._closers.append(lambda: provider.shutdown())
    tracer = provider.get_tracer(SCOPE)

    def message_tracer(destination: str, subscription: str | None) -> MessageTracer:
        return MessageTracer(tracer, destination, subscription)
    return message_tracer


def _azure_monitor_auth(settings: TelemetrySettings) -> dict[str, Any]:
    """The exporter's `credential` when Application Insights accepts Entra ID only (APPLICATIONINSIGHTS_
    AUTHENTICATION); without one it sends the connection string's instrumentation key, which such a resource
    refuses."""
    if settings.azure_monitor_auth is None:
        return {}
    from sbworker.core import credentials

    return {"credential": credentials.sync_entra(settings.azure_monitor_auth, settings.azure_monitor_client_id)}


def _metrics(settings: TelemetrySettings, resource: Resource, telemetry: Telemetry, scrape: bool) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    from sbworker.observability.metrics import OtelMetrics

    # /metrics: OpenTelemetry's Prometheus exporter, into a registry of our own (not prometheus_client's
    # process-global one, which a second provider in the same process, a test's, would collide with). No
    # target_info series and no otel_scope labels: the series are exactly the instruments, as the README lists them.
    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = [PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False,
                                                          registry=registry)] if scrape else []
    interval = settings.metric_export_interval_ms
    if settings.otlp_metrics_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(
            endpoint=settings.otlp_metrics_endpoint, headers=dict(settings.otlp_headers)),
            export_interval_millis=interval))
    if settings.azure_monitor_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

        readers.append(PeriodicExportingMetricReader(AzureMonitorMetricExporter(
            connection_string=settings.azure_monitor_connection_string, **_azure_monitor_auth(settings)),
            export_interval_millis=interval))
    # Not made global: the listener holds its meter, and tests build one provider per listener.
    provider = MeterProvider(resource=resource, metric_readers=readers)
    telemetry.metrics = OtelMetrics(provider.get_meter("sbworker"))
    if scrape:
        telemetry.prometheus = lambda: generate_latest(registry).decode()
    telemetry._closers.append(lambda: provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MILLIS))

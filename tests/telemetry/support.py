"""The service (`listener.service.Service`: listener + co-hosted worker) in the test's loop, against localbus and
localdts, with telemetry the test chooses.

The durabletask SDK builds its spans from the global tracer provider, which OpenTelemetry lets a process set only
once: tests/fixtures/isolation.py installs it for the session, and each test takes its spans from the
`span_exporter` fixture and looks only at its own trace ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from listener.receiver import Listener
from listener.service import Service
from localbus import LocalBus
from localdts import LocalDts
from sbworker.core import config
from sbworker.observability.telemetry import Telemetry
from sbworker.observability.tracing import SCOPE, MessageTracer
from tests.fixtures.isolation import session_tracer_provider
from tests.integration.harness import DEFAULT_LISTENER, servicebus_settings


def tracing_only() -> Telemetry:
    """Telemetry with the listener's spans going to the global provider (and no metrics)."""
    tracer = session_tracer_provider().get_tracer(SCOPE)
    return Telemetry(tracer=lambda queue, subscription: MessageTracer(tracer, queue, subscription))


def settings(bus: LocalBus, dts: LocalDts, **listener: Any) -> config.Settings:
    return config.Settings(dts=config.parse_dts(dts.connection_string), servicebus=servicebus_settings(bus),
                           listener=replace(DEFAULT_LISTENER, **listener))


@contextlib.asynccontextmanager
async def running(service_settings: config.Settings, telemetry: Telemetry) -> AsyncIterator[Listener]:
    """`sbworker run` in this loop until the block ends; yields the listener once it is connected."""
    service = Service(service_settings, telemetry=telemetry)
    try:
        await service.start()
        await service.ready(20)
        yield service.listeners[0]
    finally:
        await asyncio.wait_for(service.stop(), 60)


def in_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]


def tree(spans: list[ReadableSpan]) -> str:
    """The spans as an indented tree, for assertion messages."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans if s.context is not None}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)

    def lines(parent: int | None, depth: int) -> list[str]:
        out = []
        for s in sorted(by_parent.get(parent, []), key=lambda s: s.start_time or 0):
            assert s.context is not None
            out.append(f"{'  ' * depth}{s.name} [{s.kind.name}]")
            out.extend(lines(s.context.span_id, depth + 1))
        return out

    return "\n".join(lines(None, 0))

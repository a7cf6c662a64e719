"""The listener's metrics, through the OpenTelemetry metrics API (`/metrics` renders them through OpenTelemetry's
Prometheus exporter, see sbworker/observability/telemetry.py).

`Metrics` is the no-op the listener holds when telemetry is disabled: each hook is an empty method call, so the
hot path pays nothing. `OtelMetrics` records into a real meter (built by sbworker/observability/telemetry.py).
Labels come from fixed vocabularies only (actions, reason codes, DTS operations), never from what a publisher wrote.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sbworker.core.codes import AbandonReason, Reason
from sbworker.core.errors import rpc_code

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

# Seconds: from a fast DTS call (about 1 ms) to a message that waited out the transient-retry budget (20 s).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Every reason a settlement can carry, whatever its action; anything else is counted as "other".
_REASONS = frozenset({*Reason, *AbandonReason, "started", "duplicate", "raised", "pending", "unconfirmed"})


def reason_label(reason: str) -> str:
    """A bounded label for a settlement reason: one of the fixed vocabulary, or "other"."""
    return reason if reason in _REASONS else "other"


class Metrics:
    """The hooks the listener calls; this base class records nothing (telemetry disabled)."""

    def settled(self, action: str, reason: str, seconds: float) -> None:
        """A message left our hands: `action` is complete, dead_letter, abandon or reenqueue."""

    def dts_call(self, operation: str, outcome: str, seconds: float) -> None:
        """One call to DTS (`outcome` is ok or the gRPC status name)."""

    def in_flight(self, delta: int) -> None:
        """A handler started (+1) or finished (-1)."""

    def lock_renewed(self) -> None:
        """A held message's lock was renewed."""

    def lock_lost(self) -> None:
        """A renewal failed: Service Bus will redeliver that message."""

    def reenqueued(self) -> None:
        """An early approval was sent back as a scheduled copy."""

    def reconnected(self) -> None:
        """The receiver lost its connection and is about to open a new one."""


NOOP = Metrics()


class OtelMetrics(Metrics):
    """Records into OpenTelemetry instruments of `meter`.

    The two per-message counts (settled, in flight) are kept as plain numbers and read by observable instruments
    when metrics are collected: an OpenTelemetry `add` per message cost about 10 us each, and these two were three
    of the five recordings per message (bench, 2026-11-29). The exported series are the same.
    """

    def __init__(self, meter: Meter) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self._settled_counts: dict[tuple[str, str], int] = {}
        self._in_flight_now = 0

        def observe_settled(_options: CallbackOptions) -> list[Observation]:
            counts = dict(self._settled_counts)  # one copy under the GIL: the event loop keeps counting
            return [Observation(n, {"action": action, "reason": reason}) for (action, reason), n in counts.items()]

        def observe_in_flight(_options: CallbackOptions) -> list[Observation]:
            return [Observation(self._in_flight_now)]

        meter.create_observable_counter("sbworker.messages.settled", callbacks=[observe_settled], unit="{message}",
                                        description="Messages settled, by action and reason")
        self._handling = meter.create_histogram(
            "sbworker.message.handling.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            description="From receipt to settlement of one message, by action")
        self._dts = meter.create_histogram(
            "sbworker.dts.call.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            description="One DTS call, by operation and outcome")
        meter.create_observable_up_down_counter("sbworker.messages.in_flight", callbacks=[observe_in_flight],
                                                unit="{message}", description="Messages being handled now")
        self._renewals = meter.create_counter("sbworker.lock.renewals", unit="{renewal}",
                                              description="Message locks renewed")
        self._lost = meter.create_counter("sbworker.lock.lost", unit="{lock}",
                                          description="Message locks that could not be renewed")
        self._reenqueued = meter.create_counter("sbworker.approvals.reenqueued", unit="{message}",
                                                description="Early approvals re-enqueued as scheduled copies")
        self._reconnects = meter.create_counter("sbworker.receiver.reconnects", unit="{reconnect}",
                                                description="Receiver connections lost and opened again")

    def settled(self, action: str, reason: str, seconds: float) -> None:
        key = (action, reason_label(reason))
        self._settled_counts[key] = self._settled_counts.get(key, 0) + 1
        self._handling.record(seconds, {"action": action})

    def dts_call(self, operation: str, outcome: str, seconds: float) -> None:
        self._dts.record(seconds, {"operation": operation, "outcome": outcome})

    def in_flight(self, delta: int) -> None:
        self._in_flight_now += delta

    def lock_renewed(self) -> None:
        self._renewals.add(1)

    def lock_lost(self) -> None:
        self._lost.add(1)

    def reenqueued(self) -> None:
        self._reenqueued.add(1)

    def reconnected(self) -> None:
        self._reconnects.add(1)


class TimedDts:
    """A DTS client that records how long each call takes (`dts_call`), and otherwise is the client it wraps."""

    def __init__(self, client: Any, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    async def _timed(self, operation: str, call: Any) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call
        except BaseException as error:
            code = rpc_code(error)
            outcome = code.name if code is not None else type(error).__name__
            raise
        finally:
            self._metrics.dts_call(operation, outcome, time.perf_counter() - started)

    async def schedule_new_orchestration(self, orchestrator: Any, **kwargs: Any) -> str:
        result: str = await self._timed("start", self._client.schedule_new_orchestration(orchestrator, **kwargs))
        return result

    async def get_orchestration_state(self, instance_id: str, **kwargs: Any) -> Any:
        return await self._timed("get_state", self._client.get_orchestration_state(instance_id, **kwargs))

    async def raise_orchestration_event(self, instance_id: str, event_name: str, **kwargs: Any) -> None:
        await self._timed("raise_event", self._client.raise_orchestration_event(instance_id, event_name, **kwargs))

    async def get_orchestration_history(self, instance_id: str) -> list[Any]:
        result: list[Any] = await self._timed("get_history", self._client.get_orchestration_history(instance_id))
        return result

"""Keeps one work item from stopping the co-hosted DTS worker, and says when the worker cannot make progress.

A gRPC client interceptor on the worker's channel (the SDK's public ``interceptors=``), so it holds against any
DTS, not only ours:

- A completion larger than DTS accepts (``DTS_MESSAGE_BYTES``): the SDK would log the refusal and leave the work
  item unanswered, so the backend offers it again and again. The guard sends instead a completion that fails the
  orchestration (or the activity) with a message naming the limit and the size, as the .NET SDK does for an
  oversized action: the instance ends FAILED, never in a loop.
- The work-item stream: the SDK opens one stream for all work; a work item it cannot receive (past the channel's
  receive limit) or decode ends that stream, and the backend may offer the same item first on the next one. The
  guard counts streams that fail in a row; ``problem()`` says so, with the gRPC error, once three have (and no
  stream has since stayed up), which ``/readyz`` reports. One instance failing in the executor is not such a
  problem: the SDK fails that instance and the stream goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb

log = logging.getLogger(__name__)

#: The largest gRPC message DTS takes from a worker: gRPC's default, which the .NET SDK keeps under by splitting
#: completions into chunks of at most 4,089,446 bytes ("headroom for request size overhead").
DTS_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Streams that must fail in a row before the worker is reported unable to make progress.
FAILURES_BEFORE_UNREADY: Final = 3
#: A stream that stays up this long without failing shows the worker can make progress again.
STREAM_SETTLE_SECONDS: Final = 5.0

_GET_WORK_ITEMS = "/GetWorkItems"
_COMPLETE_ORCHESTRATION = "/CompleteOrchestratorTask"
_COMPLETE_ACTIVITY = "/CompleteActivityTask"
ERROR_TYPE: Final = "WorkItemTooLarge"


class StreamHealth:
    """What the worker's work-item streams did lately; thread-safe (the SDK reads its stream on a thread)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._last_error = ""
        self._opened_at: float | None = None
        self._reported = False

    def opened(self) -> None:
        with self._lock:
            self._opened_at = self._clock()

    def delivered(self) -> None:
        with self._lock:
            self._failures = 0
        self._log_recovery()

    def failed(self, error: grpc.RpcError) -> None:
        code = error.code() if callable(getattr(error, "code", None)) else None
        details = error.details() if callable(getattr(error, "details", None)) else str(error)
        with self._lock:
            self._failures += 1
            self._opened_at = None
            self._last_error = f"{getattr(code, 'name', code)}: {details}"[:300]
        problem = self.problem()
        if problem is not None and not self._reported:
            self._reported = True
            log.warning("%s", problem)

    def problem(self) -> str | None:
        """Why the worker cannot make progress now, or None."""
        with self._lock:
            settled = self._opened_at is not None and self._clock() - self._opened_at >= STREAM_SETTLE_SECONDS
            if self._failures < FAILURES_BEFORE_UNREADY or settled:
                return None
            return (f"the DTS worker's work-item stream failed {self._failures} times in a row "
                    f"(last: {self._last_error}); no orchestration or activity runs until it stays up")

    def _log_recovery(self) -> None:
        if self._reported and self.problem() is None:
            self._reported = False
            log.info("the DTS worker's work-item stream delivers work again")


class _ObservedStream:
    """The GetWorkItems call as the SDK sees it (iterable, cancellable), reporting to a StreamHealth."""

    def __init__(self, call: Any, health: StreamHealth) -> None:
        self._call = call
        self._health = health
        health.opened()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._call)
        except grpc.RpcError as error:
            self._health.failed(error)
            raise
        self._health.delivered()
        return item

    def __getattr__(self, name: str) -> Any:  # cancel(), code(), details() … of the underlying call
        return getattr(self._call, name)


class WorkerGuard(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Pass it in the worker's ``interceptors``; read ``health.problem()`` for readiness."""

    def __init__(self, max_send_bytes: int = DTS_MESSAGE_BYTES) -> None:
        self.max_send_bytes = max_send_bytes
        self.health = StreamHealth()

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        call = continuation(client_call_details, request)
        if client_call_details.method.endswith(_GET_WORK_ITEMS):
            return _ObservedStream(call, self.health)
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        method = client_call_details.method
        if method.endswith((_COMPLETE_ORCHESTRATION, _COMPLETE_ACTIVITY)):
            size = request.ByteSize()
            if size > self.max_send_bytes:
                request = self._failed_instead(request, size)
        return continuation(client_call_details, request)

    def _failed_instead(self, request: Any, size: int) -> Any:
        if isinstance(request, pb.OrchestratorResponse):
            message = (f"the orchestration's work item answer is {size:,} bytes, larger than the "
                       f"{self._limit_text()} that DTS accepts in one message; the instance is failed instead "
                       "of being offered again for ever (keep inputs, outputs and custom status small, or "
                       "configure large-payload storage)")
            log.warning("instance %s: %s", request.instanceId[:100], message)
            failure = pb.TaskFailureDetails(errorType=ERROR_TYPE, errorMessage=message, isNonRetriable=True)
            action = pb.OrchestratorAction(id=-1, completeOrchestration=pb.CompleteOrchestrationAction(
                orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED, failureDetails=failure))
            return pb.OrchestratorResponse(instanceId=request.instanceId, completionToken=request.completionToken,
                                           actions=[action])
        if isinstance(request, pb.ActivityResponse):
            message = (f"the activity's result is {size:,} bytes, larger than the {self._limit_text()} that DTS "
                       "accepts in one message")
            log.warning("instance %s, task %d: %s", request.instanceId[:100], request.taskId, message)
            failure = pb.TaskFailureDetails(errorType=ERROR_TYPE, errorMessage=message, isNonRetriable=True)
            return pb.ActivityResponse(instanceId=request.instanceId, taskId=request.taskId,
                                       completionToken=request.completionToken, failureDetails=failure)
        return request

    def _limit_text(self) -> str:
        limit = self.max_send_bytes
        return f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit:,} bytes"

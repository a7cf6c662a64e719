"""What DTS refuses, localdts refuses too, with a message that names the limit; and the bounds that keep one
instance from stalling the others.

Sources: "Durable Task Scheduler", Limitations and considerations (learn.microsoft.com/azure/durable-task/
scheduler/durable-task-scheduler, 2026-05-04): orchestration instance ids are 1 to 100 characters; orchestrator
and activity inputs and outputs, external event data, custom status and entity state are at most 1 MB each.
A worker receives its work items over gRPC, whose default maximum message size is 4 MiB (grpc's
``GRPC_DEFAULT_MAX_RECV_MESSAGE_LENGTH``, kept by durabletask-python and durabletask-js): a larger work item
cannot be delivered, so an instance whose history grows past it must end instead of being offered for ever.
Instance ids starting with "@" are entity ids ("@name@key"), reserved by the Durable Task SDKs (durabletask-dotnet
`Check.NotEntity`: "Instance IDs starting with '@' are reserved for entities"; durabletask-python
`EntityInstanceId.parse`): an orchestration with one would collide with an entity of that name and key.
"""

from __future__ import annotations

from collections.abc import Iterator

import durabletask.internal.orchestrator_service_pb2 as pb

MAX_INSTANCE_ID_LENGTH = 100
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_WORK_ITEM_BYTES = 4 * 1024 * 1024
# Events raised at one instance and not yet handed to its orchestrator: more are refused (RESOURCE_EXHAUSTED).
MAX_PENDING_RAISED_EVENTS = 1000
# A work item offered this many times in a row without an answer (its worker's stream ended holding only that
# item, or it abandoned the item) ends its instance (orchestration: FAILED) or its activity (failed) instead of
# being offered again. A stream that ends holding several counts against none of them (localdts.suspects).
MAX_UNANSWERED_DELIVERIES = 5
# History is streamed to clients in chunks of at most this (or one event, if larger): readable under 4 MiB.
HISTORY_CHUNK_BYTES = 1024 * 1024
# gRPC's receive limit on localdts's side: well above the limits above, so that an answer over them arrives and
# is turned into a clear failure instead of a transport error that leaves its work item in flight.
SERVER_MAX_RECEIVE_BYTES = 64 * 1024 * 1024
# Bytes a history event costs inside a work item beyond its own size (field tag and length), and the request's.
EVENT_FRAMING_BYTES = 6
WORK_ITEM_FRAMING_BYTES = 1024

PAYLOAD_TOO_LARGE = "PayloadTooLarge"
WORK_ITEM_TOO_LARGE = "WorkItemTooLarge"
NEVER_ANSWERED = "WorkItemNeverAnswered"


def instance_id_problem(instance_id: str) -> str | None:
    """Why DTS would refuse ``instance_id`` (one line, without echoing a long id), or None if it is valid."""
    if not instance_id:
        return "an instance id cannot be empty"
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        return (f"instance id of {len(instance_id)} characters is longer than {MAX_INSTANCE_ID_LENGTH} characters "
                "(the Durable Task Scheduler's limit)")
    if instance_id.startswith("@"):
        return (f"instance id {instance_id[:40]!r} starts with '@', which is reserved for entity ids ('@name@key'): "
                "an orchestration's instance id must not start with '@'")
    return None


def mib(size: int) -> str:
    """4194304 -> "4 MiB", 4326929 -> "4.1 MiB", 300000 -> "293 KiB"."""
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    text = f"{size / (1024 * 1024):.1f}".removesuffix(".0")
    return f"{text} MiB"


def payload_problem(what: str, value: str | None, limit: int = MAX_PAYLOAD_BYTES) -> str | None:
    """Why a payload is refused (it is over DTS's per-payload limit), or None."""
    if value is None:
        return None
    size = len(value.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return f"{what} is {mib(size)} ({size} bytes), over the {mib(limit)} that DTS accepts for one payload"


def _action_payloads(action: pb.OrchestratorAction) -> Iterator[tuple[str, str | None]]:
    if action.HasField("scheduleTask"):
        t = action.scheduleTask
        yield f"the input of activity {t.name!r}", t.input.value if t.HasField("input") else None
    elif action.HasField("createSubOrchestration"):
        c = action.createSubOrchestration
        yield f"the input of sub-orchestration {c.name!r}", c.input.value if c.HasField("input") else None
    elif action.HasField("completeOrchestration"):
        c = action.completeOrchestration
        what = "the input to continue as new with" if (
            c.orchestrationStatus == pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW) else "the orchestration's output"
        yield what, c.result.value if c.HasField("result") else None
    elif action.HasField("sendEvent"):
        e = action.sendEvent
        yield f"the data of event {e.name!r}", e.data.value if e.HasField("data") else None
    elif action.HasField("sendEntityMessage"):
        m = action.sendEntityMessage
        for kind in ("entityOperationSignaled", "entityOperationCalled"):
            if m.HasField(kind):
                op = getattr(m, kind)
                value = op.input.value if op.HasField("input") else None
                yield f"the input of entity operation {op.operation!r}", value


def response_problem(response: pb.OrchestratorResponse) -> str | None:
    """The first payload of an orchestrator's answer that is over the per-payload limit, described; or None."""
    if response.HasField("customStatus"):
        problem = payload_problem("the custom status", response.customStatus.value)
        if problem:
            return problem
    for action in response.actions:
        for what, value in _action_payloads(action):
            problem = payload_problem(what, value)
            if problem:
                return problem
    return None


def failure(error_type: str, message: str) -> pb.TaskFailureDetails:
    return pb.TaskFailureDetails(errorType=error_type, errorMessage=message, isNonRetriable=True)


def failed_response(response: pb.OrchestratorResponse, problem: str) -> pb.OrchestratorResponse:
    """The answer to apply instead of one that carries a payload over the limit: the orchestration fails."""
    complete = pb.CompleteOrchestrationAction(orchestrationStatus=pb.ORCHESTRATION_STATUS_FAILED,
                                              failureDetails=failure(PAYLOAD_TOO_LARGE, problem))
    replaced = pb.OrchestratorResponse(instanceId=response.instanceId, completionToken=response.completionToken,
                                       actions=[pb.OrchestratorAction(id=-1, completeOrchestration=complete)])
    if response.HasField("orchestrationTraceContext"):
        replaced.orchestrationTraceContext.CopyFrom(response.orchestrationTraceContext)
    return replaced


def work_item_message(size: int, limit: int) -> str:
    return (f"its next work item would be {mib(size)}, over the {mib(limit)} a worker can receive (gRPC's default "
            f"maximum message size; localdts --max-work-item-bytes): the history grew too large. Keep large data "
            f"out of inputs that are copied into every retry, or pass references to it")


def events_size(events: list[pb.HistoryEvent]) -> int:
    return sum(e.ByteSize() + EVENT_FRAMING_BYTES for e in events)

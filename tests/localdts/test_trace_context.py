"""Item 3: trace context goes from the caller to ExecutionStarted and to the activities, and the worker's
orchestration trace context comes back on every episode, also after a restart.

Driven over the real gRPC protocol by a hand-written worker, so that it needs no OpenTelemetry: these are the
fields the SDK reads to put its orchestration and activity spans into the caller's trace.
"""

from __future__ import annotations

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.client import OrchestrationStatus

from localdts import LocalDts

CALLER = pb.TraceContext(traceParent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                         spanID="b7ad6b7169203331")
ACTIVITY = pb.TraceContext(traceParent="00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
                           spanID="00f067aa0ba902b7")


def _orchestration_trace() -> pb.OrchestrationTraceContext:
    trace = pb.OrchestrationTraceContext()
    trace.spanID.value = "53995c3f42cd8ad8"
    trace.spanStartTime.GetCurrentTime()
    return trace


def test_trace_context_reaches_execution_started_and_activities_and_survives_a_restart(
        dts: LocalDts, client: DurableTaskSchedulerClient) -> None:
    channel = grpc.insecure_channel(f"localhost:{dts.port}")
    stub = stubs.TaskHubSidecarServiceStub(channel)
    stub.StartInstance(pb.CreateInstanceRequest(instanceId="traced", name="hello_cities", parentTraceContext=CALLER))

    stream = stub.GetWorkItems(pb.GetWorkItemsRequest())
    first_item = next(stream)
    first = first_item.orchestratorRequest
    started = [e for e in first.newEvents if e.HasField("executionStarted")]
    assert started[0].executionStarted.parentTraceContext == CALLER
    assert not first.HasField("orchestrationTraceContext")  # nothing kept yet

    kept = _orchestration_trace()
    schedule = pb.OrchestratorAction(id=1, scheduleTask=pb.ScheduleTaskAction(name="say_hello",
                                                                              parentTraceContext=ACTIVITY))
    schedule.scheduleTask.input.value = '"Tokyo"'
    stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
        instanceId="traced", completionToken=first_item.completionToken, actions=[schedule],
        orchestrationTraceContext=kept))
    activity_item = next(stream)
    assert activity_item.activityRequest.parentTraceContext == ACTIVITY
    result = pb.ActivityResponse(instanceId="traced", taskId=1, completionToken=activity_item.completionToken)
    result.result.value = '"Hello Tokyo!"'
    stub.CompleteActivityTask(result)
    stream.cancel()
    channel.close()

    dts.stop()  # what was kept must come from disk now
    dts.start()
    channel = grpc.insecure_channel(f"localhost:{dts.port}")
    stub = stubs.TaskHubSidecarServiceStub(channel)
    stream = stub.GetWorkItems(pb.GetWorkItemsRequest())
    second_item = next(stream)
    second = second_item.orchestratorRequest
    assert second.orchestrationTraceContext == kept
    past = {e.WhichOneof("eventType"): e for e in second.pastEvents}
    assert past["executionStarted"].executionStarted.parentTraceContext == CALLER
    assert past["taskScheduled"].taskScheduled.parentTraceContext == ACTIVITY
    done = pb.OrchestratorAction(id=-1, completeOrchestration=pb.CompleteOrchestrationAction(
        orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED))
    stub.CompleteOrchestratorTask(pb.OrchestratorResponse(
        instanceId="traced", completionToken=second_item.completionToken, actions=[done]))
    stream.cancel()
    channel.close()
    state = client.get_orchestration_state("traced")
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED


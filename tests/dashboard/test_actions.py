"""Every action over HTTP against the real embedded stack: DTS management, approvals and starts that go through
the queue, and the dead-letter queue's resubmit and delete."""

from __future__ import annotations

import json
import re
from html import unescape
from urllib.parse import quote

from azure.servicebus import ServiceBusClient, ServiceBusSubQueue
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.history import EventRaisedEvent, ExecutionStartedEvent

from sbworker.core.codes import TAG_MESSAGE_ID
from tests.dashboard.conftest import Stack, Web, confirmed, finished, send_raw, start, waiting_for_approval
from tests.support.wait import until


def _queue(stack: Stack) -> str:
    return stack.settings.servicebus.source.entity.name


def _status(dts: DurableTaskSchedulerClient, instance_id: str) -> str | None:
    state = dts.get_orchestration_state(instance_id)
    return None if state is None else state.runtime_status.name


def _dead_letters(sb: ServiceBusClient, queue: str) -> dict[str, int]:
    """message id → sequence number, peeked."""
    with sb.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        return {str(m.message_id): int(m.sequence_number or 0)
                for m in receiver.peek_messages(max_message_count=1000, sequence_number=1)}


def test_suspend_resume_and_terminate_with_a_reason(stack: Stack, sb: ServiceBusClient,
                                                    dts: DurableTaskSchedulerClient, web: Web, run_id: str) -> None:
    instance_id = f"{run_id}-managed"
    start(sb, _queue(stack), "approval_workflow", {"item": "tent"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    page = web.post("/instance/suspend", {"id": instance_id, "reason": "audit"})
    assert page.notice() == "Suspended."
    until(lambda: _status(dts, instance_id) == "SUSPENDED", what="suspended")
    assert 'id="resume"' in web.get(f"/instance?id={instance_id}").text
    assert web.post("/instance/resume", {"id": instance_id}).notice() == "Resumed."
    until(lambda: _status(dts, instance_id) == "RUNNING", what="running again")
    asked, page = confirmed(web, "/instance/terminate", {"id": instance_id, "reason": "ordered twice"})
    assert "will be terminated" in asked.text and "ordered twice" in asked.text
    assert page.notice() == "Terminate requested (reason: ordered twice)."
    state = finished(dts, instance_id)
    assert state.runtime_status.name == "TERMINATED" and json.loads(state.serialized_output or "null") == \
        "ordered twice"


def test_restart_in_place_and_as_a_new_instance_then_purge(stack: Stack, sb: ServiceBusClient,
                                                           dts: DurableTaskSchedulerClient, web: Web,
                                                           run_id: str) -> None:
    instance_id = f"{run_id}-again"
    start(sb, _queue(stack), "hello_cities", instance_id=instance_id)
    first = finished(dts, instance_id)
    page = web.post("/instance/restart", {"id": instance_id})
    assert page.notice() == "Restarted."
    until(lambda: (s := dts.get_orchestration_state(instance_id)) is not None and s.created_at > first.created_at
             and s.runtime_status.name == "COMPLETED", what="the restarted run to complete")
    page = web.post("/instance/restart", {"id": instance_id, "new_instance_id": "on"})
    new_id = re.search(r"Restarted as (\S+)\.", page.notice())
    assert new_id is not None and new_id.group(1) != instance_id
    assert unescape(re.search(r'id="instance-id">(.*?)<', page.text).group(1)) == new_id.group(1)  # type: ignore[union-attr]
    assert finished(dts, new_id.group(1)).serialized_output == first.serialized_output
    asked, page = confirmed(web, "/instance/purge", {"id": instance_id})
    assert "will be deleted with its history" in asked.text and 'data-affected="1"' in asked.text
    assert page.notice() == f"Purged {instance_id}." and page.url == "/instances"
    assert dts.get_orchestration_state(instance_id) is None


def test_a_refused_action_says_why_and_changes_nothing(stack: Stack, sb: ServiceBusClient,
                                                       dts: DurableTaskSchedulerClient, web: Web,
                                                       run_id: str) -> None:
    instance_id = f"{run_id}-busy"
    start(sb, _queue(stack), "approval_workflow", {"item": "sofa"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    page = web.post("/instance/restart", {"id": instance_id})  # only finished instances restart
    assert page.notice().startswith("restart failed: FAILED_PRECONDITION")
    assert 'class="notice error"' in page.text
    page = web.post("/instance/raise", {"id": instance_id, "event_name": "ApprovalEvent", "event_data": "{oops"})
    assert page.notice().startswith("The event data is not valid JSON")
    # 20 events of 256 KiB (the issue) cannot come from here: only declared events, with data their schema allows.
    page = web.post("/instance/raise", {"id": instance_id, "event_name": "Bulk",
                                        "event_data": json.dumps("x" * 70_000)})
    assert page.notice() == "Not sent: approval_workflow waits for ApprovalEvent, not 'Bulk'."
    page = web.post("/instance/raise", {"id": instance_id, "event_name": "ApprovalEvent",
                                        "event_data": json.dumps({"approved": True, "approver": "x" * 70_000})})
    assert page.notice() == "Not sent: $.data.approver: must be at most 256 characters, got 70000 (SchemaViolation)."
    assert not [e for e in dts.get_orchestration_history(instance_id) if isinstance(e, EventRaisedEvent)]
    assert _status(dts, instance_id) == "RUNNING"


def test_raise_event_is_sent_through_the_queue(stack: Stack, sb: ServiceBusClient, dts: DurableTaskSchedulerClient,
                                               web: Web, run_id: str) -> None:
    instance_id = f"{run_id}-raised"
    start(sb, _queue(stack), "approval_workflow", {"item": "bike"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    page = web.post("/instance/raise", {"id": instance_id, "event_name": "ApprovalEvent",
                                        "event_data": '{"approved": true, "approver": "direct"}'})
    sent = re.fullmatch(r"Event ApprovalEvent sent through queue 'workflow-requests' as message (\w+)\.", page.notice())
    assert sent is not None, page.notice()
    assert finished(dts, instance_id).serialized_output == '"Approved"'
    raised = [e for e in dts.get_orchestration_history(instance_id) if isinstance(e, EventRaisedEvent)]
    assert [json.loads(e.input or "null") for e in raised] == [{"approved": True, "approver": "direct",
                                                                "message_id": sent.group(1)}]


def test_approve_is_sent_through_the_queue_and_completes_the_workflow(stack: Stack, sb: ServiceBusClient,
                                                                      dts: DurableTaskSchedulerClient, web: Web,
                                                                      run_id: str) -> None:
    instance_id = f"{run_id}-approve me"
    start(sb, _queue(stack), "approval_workflow", {"item": "monitor"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    assert 'id="approval-form"' in web.get(f"/instance?id={quote(instance_id)}").text
    page = web.post("/instance/approve", {"id": instance_id, "decision": "approve", "approver": "ada",
                                          "comment": "within budget"})
    sent = re.fullmatch(r"Approval sent through queue 'workflow-requests' as message (\w+)\.", page.notice())
    assert sent is not None, page.notice()
    state = finished(dts, instance_id)
    assert state.serialized_output == '"Approved"'
    custom = json.loads(state.serialized_custom_status or "{}")
    assert custom["approver"] == "ada" and custom["comment"] == "within budget"
    # The listener raised it (it adds the message id); a raise straight to DTS would carry none.
    raised = [json.loads(e.input or "null") for e in dts.get_orchestration_history(instance_id)
              if isinstance(e, EventRaisedEvent)]
    assert raised == [{"approved": True, "approver": "ada", "comment": "within budget", "message_id": sent.group(1)}]
    assert 'id="approval-form"' not in web.get(f"/instance?id={quote(instance_id)}").text


def test_reject_is_sent_through_the_queue(stack: Stack, sb: ServiceBusClient, dts: DurableTaskSchedulerClient,
                                          web: Web, run_id: str) -> None:
    instance_id = f"{run_id}-reject"
    start(sb, _queue(stack), "approval_workflow", {"item": "yacht"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    page = web.post("/instance/approve", {"id": instance_id, "decision": "reject", "approver": "bo"})
    assert page.notice().startswith("Rejection sent through queue")
    assert finished(dts, instance_id).serialized_output == '"Rejected"'


def test_approve_is_refused_for_an_instance_that_is_not_waiting(stack: Stack, sb: ServiceBusClient,
                                                                dts: DurableTaskSchedulerClient, web: Web,
                                                                run_id: str) -> None:
    instance_id = f"{run_id}-hello"
    start(sb, _queue(stack), "hello_cities", instance_id=instance_id)
    finished(dts, instance_id)
    page = web.post("/instance/approve", {"id": instance_id, "decision": "approve", "approver": "ada"})
    assert page.notice() == "This instance is not waiting for an approval."
    waiting = f"{run_id}-nobody"
    start(sb, _queue(stack), "approval_workflow", {"item": "tv"}, instance_id=waiting)
    waiting_for_approval(dts, waiting)
    page = web.post("/instance/approve", {"id": waiting, "decision": "approve", "approver": ""})
    assert page.notice().startswith("Not sent:") and _status(dts, waiting) == "RUNNING"


def test_new_orchestration_publishes_a_start_message(stack: Stack, dts: DurableTaskSchedulerClient, web: Web,
                                                     run_id: str) -> None:
    instance_id = f"{run_id}-new"
    page = web.post("/new", {"orchestration": "fan_out_fan_in", "input": '["Oslo", "Lima"]',
                             "instance_id": instance_id, "start_at": ""}, token_from="/new")
    sent = re.fullmatch(r"Start message (\w+) sent through queue 'workflow-requests'\.", page.notice())
    assert sent is not None, page.notice()
    assert unescape(re.search(r'id="instance-id">(.*?)<', page.text).group(1)) == instance_id  # type: ignore[union-attr]
    assert finished(dts, instance_id).serialized_output == '["Hello Oslo!", "Hello Lima!"]'
    started = next(e for e in dts.get_orchestration_history(instance_id) if isinstance(e, ExecutionStartedEvent))
    assert (started.tags or {}).get(TAG_MESSAGE_ID) == sent.group(1)  # it came through the listener


def test_new_orchestration_with_start_at_stays_pending(stack: Stack, dts: DurableTaskSchedulerClient, web: Web,
                                                       run_id: str) -> None:
    instance_id = f"{run_id}-tomorrow"
    page = web.post("/new", {"orchestration": "hello_cities", "input": "", "instance_id": instance_id,
                             "start_at": "2099-01-01T09:00"}, token_from="/new")
    assert "to start at 2099-01-01T09:00:00.000Z" in page.notice()
    until(lambda: _status(dts, instance_id) == "PENDING", what="a pending instance")


def test_new_orchestration_refuses_bad_input_and_sends_nothing(stack: Stack, sb: ServiceBusClient,
                                                               dts: DurableTaskSchedulerClient, web: Web,
                                                               run_id: str) -> None:
    token = web.get("/new").token()
    for form, error in (
        ({"orchestration": "hello_cities", "input": "{nope"}, "The input is not valid JSON"),
        ({"orchestration": "say_hello", "input": ""}, "Unknown orchestration &#39;say_hello&#39;"),
        ({"orchestration": "hello_cities", "input": "", "start_at": "tomorrow"}, "start_at is not an ISO-8601 time"),
        ({"orchestration": "hello_cities", "input": "", "instance_id": "i" * 101},
         "instance_id is 101 characters; the limit is 100 characters"),
        ({"orchestration": "hello_cities", "input": "", "instance_id": "@counter@1"},
         "instance_id starts with &#39;@&#39;, which the Durable Task SDKs reserve for entity ids"),
        ({"orchestration": "hello_cities", "input": json.dumps("\u00e9" * 100_000, ensure_ascii=False)},
         "$.input is 600,002 bytes as JSON in DTS; the limit is 524,288 bytes (MAX_INPUT_BYTES)"),
        ({"orchestration": "workflow_with_retry", "input": '{"retry": {"max_attempts": 100}}'},
         "max_attempts: 100 is out of bounds; the limit is 1 to 10 attempts"),
    ):
        page = web.request("POST", "/new", {**form, "instance_id": form.get("instance_id", f"{run_id}-x"),
                                            "csrf_token": token}, headers={"Origin": web.base})
        assert page.status == 400 and error in page.text, page.text[-2000:]
        assert '{nope' not in form["input"] or "{nope</textarea>" in page.text  # what was typed is kept
    assert dts.get_orchestration_state(f"{run_id}-x") is None
    assert 'name="instance_id" maxlength="100"' in web.get("/new").text


def test_resubmit_a_dead_letter_after_its_instance_exists(stack: Stack, sb: ServiceBusClient,
                                                          dts: DurableTaskSchedulerClient, web: Web,
                                                          run_id: str) -> None:
    instance_id = f"{run_id}-early"
    queue = _queue(stack)
    # The approval arrives before its instance: dead-lettered InstanceNotFound (the stack's window is 0 s).
    early = send_raw(sb, queue, {"instance_id": instance_id, "approved": True, "approver": "early bird"}, "approval")
    seq = until(lambda: _dead_letters(sb, queue).get(early), what="the early approval dead-lettered")
    assert "InstanceNotFound" in web.get("/queue").text
    start(sb, queue, "approval_workflow", {"item": "ticket"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    asked, page = confirmed(web, "/queue/dead-letters/resubmit", {"seq": str(seq)}, token_from="/queue")
    assert early in asked.text and "InstanceNotFound" in asked.text
    assert page.notice() == f"Resubmitted 1 message(s) to 'workflow-requests': #{seq}."
    assert finished(dts, instance_id).serialized_output == '"Approved"'
    assert early not in _dead_letters(sb, queue)


def test_delete_dead_letters_removes_only_the_chosen(stack: Stack, sb: ServiceBusClient, web: Web) -> None:
    queue = _queue(stack)
    doomed = send_raw(sb, queue, "not json at all", "start")
    kept = send_raw(sb, queue, {"hello": 1}, "start")
    found = until(lambda: (d := _dead_letters(sb, queue)) and doomed in d and kept in d and d,
                     what="both dead-lettered")
    asked, page = confirmed(web, "/queue/dead-letters/delete", {"seq": str(found[doomed])}, token_from="/queue")
    assert doomed in asked.text and kept not in asked.text
    assert page.notice() == f"Deleted 1 dead-lettered message(s): #{found[doomed]}."
    left = _dead_letters(sb, queue)
    assert doomed not in left and kept in left
    assert f'data-message-id="{doomed}"' not in page.text and f'data-message-id="{kept}"' in page.text
    page = web.post("/queue/dead-letters/delete", {"seq": str(found[doomed]), "confirmed": "yes"},
                    token_from="/queue")
    assert page.notice() == f"Deleted 0 dead-lettered message(s): none. Not found: #{found[doomed]}."

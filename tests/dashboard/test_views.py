"""Every read-only view over HTTP, against the real embedded stack: list, filters, paging, refresh, instance
overview, history, timeline, messages, the queue page and the new-orchestration form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import quote, urlencode

from azure.servicebus import ServiceBusClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from orchestrations import registry
from sbworker.operations import publish
from tests.dashboard.conftest import Stack, Web, finished, send_raw, start, waiting_for_approval
from tests.support.wait import until


def _queue(stack: Stack) -> str:
    return stack.settings.servicebus.source.entity.name


def test_list_shows_each_instance_newest_first_with_its_columns(stack: Stack, sb: ServiceBusClient,
                                                               dts: DurableTaskSchedulerClient, web: Web,
                                                               run_id: str) -> None:
    first, second = f"{run_id}-a", f"{run_id}-b"
    start(sb, _queue(stack), "hello_cities", instance_id=first)
    finished(dts, first)
    start(sb, _queue(stack), "approval_workflow", {"item": "lamp"}, instance_id=second)
    waiting_for_approval(dts, second)
    page = web.get(f"/instances?prefix={run_id}")
    assert page.status == 200
    assert page.ids() == [second, first]  # newest first
    row = re.search(rf'<tr data-instance-id="{second}">(.*?)</tr>', page.text, re.S)
    assert row is not None
    cells = [unescape(re.sub(r"<[^>]+>", "", cell)).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)][1:]  # after the checkbox
    assert cells[0] == second and cells[1] == "approval_workflow" and cells[2] == "RUNNING"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cells[3]) and cells[4] >= cells[3]
    assert '"stage": "awaiting_approval"' in cells[5]
    for column in ("Instance id", "Name", "Status", "Created (UTC)", "Last updated (UTC)", "Custom status"):
        assert re.search(rf"<th[^>]*>{re.escape(column)}</th>", page.text), column


def test_filters_by_status_name_prefix_search_and_creation_time(stack: Stack, sb: ServiceBusClient,
                                                               dts: DurableTaskSchedulerClient, web: Web,
                                                               run_id: str) -> None:
    done, waiting = f"{run_id}-done", f"{run_id}-waiting"
    start(sb, _queue(stack), "hello_cities", instance_id=done)
    start(sb, _queue(stack), "approval_workflow", {"item": "chair"}, instance_id=waiting)
    finished(dts, done)
    waiting_for_approval(dts, waiting)
    assert web.get(f"/instances?prefix={run_id}&status=RUNNING").ids() == [waiting]
    assert web.get(f"/instances?prefix={run_id}&status=COMPLETED&status=RUNNING").ids() == [waiting, done]
    assert web.get(f"/instances?prefix={run_id}&name=hello_cities").ids() == [done]
    assert web.get(f"/instances?q={run_id}-WAIT").ids() == [waiting]  # case-insensitive, anywhere in the id
    assert web.get(f"/instances?prefix={run_id}&q=awaiting_approval").ids() == [waiting]  # in the custom status
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert web.get(f"/instances?prefix={run_id}&from={future}").ids() == []
    assert web.get(f"/instances?prefix={run_id}&from={past}&to={future}").ids() == [waiting, done]
    assert web.get(f"/instances?prefix={run_id}&to={past}").ids() == []
    refused = web.get("/instances?status=SLEEPING")
    assert refused.status == 400 and "unknown status &#39;SLEEPING&#39;" in refused.text


def test_auto_refresh_reloads_the_same_filtered_view(web: Web, run_id: str) -> None:
    page = web.get(f"/instances?prefix={run_id}&refresh=5&status=RUNNING")
    live = re.search(r'<div id="live"[^>]*>', page.text)
    assert live is not None
    assert 'hx-trigger="every 5s"' in live.group(0)
    target = unescape(re.search(r'hx-get="([^"]+)"', live.group(0)).group(1))  # type: ignore[union-attr]
    assert f"prefix={run_id}" in target and "status=RUNNING" in target and "refresh=5" in target
    assert "hx-trigger" not in re.search(r'<div id="live"[^>]*>', web.get("/instances").text).group(0)  # type: ignore[union-attr]
    assert web.get("/instances?refresh=7").status == 400  # only the offered intervals


def test_overview_shows_input_output_custom_status_and_the_start_message(stack: Stack, sb: ServiceBusClient,
                                                                         dts: DurableTaskSchedulerClient, web: Web,
                                                                         run_id: str) -> None:
    instance_id = f"{run_id}-<b>bold</b>"
    hostile = {"item": "<script>alert('x')</script>", "amount": 3}
    message_id = start(sb, _queue(stack), "approval_workflow", hostile, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    page = web.get(f"/instance?id={quote(instance_id)}")
    assert page.status == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "<b>bold</b>" not in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "awaiting_approval" in page.text and "RUNNING" in page.text
    assert re.search(rf'id="started-by">{message_id}<', page.text)
    assert 'hx-trigger="every 2s"' in page.text  # a running instance's page keeps itself current
    assert "Tracing is not configured" in page.text
    # Every script the page loads comes from this server: nothing inline for a payload to hide in.
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert len(scripts) == 2 and all(re.fullmatch(r'<script src="/static/[a-z.]+\.js\?v=[^"]+" defer>', s)
                                     for s in scripts), scripts
    dts.raise_orchestration_event(instance_id, "ApprovalEvent", data={"approved": True, "approver": "ada"})
    finished(dts, instance_id)
    done = web.get(f"/instance?id={quote(instance_id)}")
    assert '"Approved"' in unescape(done.text) and "hx-trigger" not in done.text


def test_overview_shows_failure_details(stack: Stack, dts: DurableTaskSchedulerClient, web: Web,
                                        run_id: str) -> None:
    # The co-hosted worker fails an orchestration it does not know: a real FAILED instance with details.
    instance_id = dts.schedule_new_orchestration("not_in_the_registry", instance_id=f"{run_id}-failed")
    state = finished(dts, instance_id)
    assert state.runtime_status.name == "FAILED" and state.failure_details is not None
    page = web.get(f"/instance?id={instance_id}")
    assert "FAILED" in page.text
    failure = re.search(r'<p class="failure"><b>(.*?)</b>: (.*?)</p>', page.text, re.S)
    assert failure is not None
    assert unescape(failure.group(1)) == state.failure_details.error_type
    assert unescape(failure.group(2)) == state.failure_details.message


def test_history_is_a_feed_of_events_with_times_and_payloads(stack: Stack, sb: ServiceBusClient,
                                                             dts: DurableTaskSchedulerClient, web: Web,
                                                             run_id: str) -> None:
    instance_id = f"{run_id}-history"
    start(sb, _queue(stack), "approval_workflow", {"item": "<desk>"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    dts.raise_orchestration_event(instance_id, "ApprovalEvent", data={"approved": False, "approver": "bo"})
    finished(dts, instance_id)
    page = web.get(f"/instance/history?id={instance_id}")
    items = re.findall(r'<li class="ev ev-(\w+)">\s*<span class="time">([^<]+)</span>', page.text)
    kinds = [kind for kind, _ in items]
    for kind in ("executionstarted", "taskscheduled", "taskcompleted", "timercreated", "eventraised",
                 "executioncompleted"):
        assert kind in kinds, kinds
    times = [when for _, when in items]
    # The feed is the history in its own order (an event raised at t may be processed after one stamped t+1 ms,
    # so the times need not be sorted), one entry per event, each with its UTC time.
    history = dts.get_orchestration_history(instance_id)
    assert len(items) == len(history)
    assert kinds == [type(e).__name__.removesuffix("Event").lower() for e in history]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when) for when in times), times
    text = unescape(page.text)
    assert "scheduled activity send_approval_request" in text and "event ApprovalEvent received" in text
    assert '"item": "<desk>"' in text and '"approver": "bo"' in text and '"result": "Rejected"' in text
    assert "<desk>" not in page.text


def test_timeline_draws_each_retry_as_its_own_bar(stack: Stack, sb: ServiceBusClient,
                                                  dts: DurableTaskSchedulerClient, web: Web, run_id: str) -> None:
    instance_id = f"{run_id}-retried"
    start(sb, _queue(stack), "workflow_with_retry",
          {"fail_times": 2, "retry": {"first_retry_seconds": 1, "backoff": 1}}, instance_id=instance_id)
    assert finished(dts, instance_id).serialized_output == '"Service succeeded after 3 attempt(s)"'
    page = web.get(f"/instance/timeline?id={instance_id}")
    bars = re.findall(r'<g class="bar k-(\w+) o-(\w+)" data-kind="\w+" data-outcome="\w+" data-label="([^"]*)"'
                      r'(?: data-attempt="(\d+)")?>', page.text)
    activities = [(outcome, label, attempt) for kind, outcome, label, attempt in bars if kind == "activity"]
    assert activities == [("failed", "unreliable_service", "1"), ("failed", "unreliable_service", "2"),
                          ("completed", "unreliable_service", "3")]
    delays = [label for kind, _, label, _ in bars if kind == "timer"]
    assert delays == ["retry delay: unreliable_service"] * 2
    assert bars[0][:3] == ("orchestration", "completed", "workflow_with_retry")
    assert "ServiceUnavailableError: service unavailable (attempt 1)" in unescape(page.text)


def test_timeline_of_a_waiting_approval_shows_the_open_wait_and_timer(stack: Stack, sb: ServiceBusClient,
                                                                      dts: DurableTaskSchedulerClient, web: Web,
                                                                      run_id: str) -> None:
    instance_id = f"{run_id}-waits"
    start(sb, _queue(stack), "approval_workflow", {"item": "pen"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    page = web.get(f"/instance/timeline?id={instance_id}")
    assert 'data-kind="wait" data-outcome="running" data-label="waiting for event: ApprovalEvent"' in page.text
    assert 'data-kind="timer" data-outcome="running" data-label="timer"' in page.text
    assert 'data-kind="activity" data-outcome="completed" data-label="send_approval_request"' in page.text


def test_messages_view_names_the_messages_that_acted_on_the_instance(stack: Stack, sb: ServiceBusClient,
                                                                     dts: DurableTaskSchedulerClient, web: Web,
                                                                     run_id: str) -> None:
    instance_id = f"{run_id}-msgs"
    started_by = start(sb, _queue(stack), "approval_workflow", {"item": "mug"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    approval = send_raw(sb, _queue(stack), {"instance_id": instance_id, "approved": True, "approver": "ada"},
                        "approval")
    finished(dts, instance_id)
    late = send_raw(sb, _queue(stack), {"instance_id": instance_id, "approved": False, "approver": "eve"},
                    "approval")  # the instance is over: dead-lettered InstanceNotRunning
    # The page lists the late approval while it is still active too: wait until it shows it dead-lettered.
    page = until(lambda: (p := web.get(f"/instance/messages?id={instance_id}")) and late in p.text
                 and "InstanceNotRunning" in p.text and p, what="the late approval in the dead-letter queue")
    origins = re.search(r'<table class="plain" id="origins">(.*?)</table>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert started_by in origins and approval in origins and "event ApprovalEvent" in origins
    queued = re.search(r'<table class="plain" id="queued">(.*?)</table>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert late in queued and "dead-letter" in queued and "InstanceNotRunning" in queued


def test_an_instance_not_created_yet_shows_its_scheduled_start(stack: Stack, sb: ServiceBusClient,
                                                               web: Web, run_id: str) -> None:
    instance_id = f"{run_id}-later"
    message, _ = publish.start_message("hello_cities", None, instance_id)
    with sb.get_queue_sender(_queue(stack)) as sender:
        sender.schedule_messages(message, datetime.now(UTC) + timedelta(hours=1))
    page = web.get(f"/instance?id={instance_id}")
    assert page.status == 404 and 'id="not-found"' in page.text
    queued = re.search(r'<table class="plain" id="queued">(.*?)</table>', page.text, re.S)
    assert queued is not None and "scheduled" in queued.group(1) and str(message.message_id) in queued.group(1)


def test_queue_page_counts_active_scheduled_and_dead_lettered(stack: Stack, sb: ServiceBusClient, web: Web,
                                                             run_id: str) -> None:
    def counts(path: str = "/queue") -> dict[str, int]:
        text = web.get(path).text
        return {k: int(v) for k, v in re.findall(r'<dd id="count-([\w-]+)">(?:<a href="/queue">)?(\d+)', text)}

    # The module's tests share the queue, and an earlier test's message can still be locked (active) while the
    # listener completes it: start from a queue the listener has drained.
    def drained() -> dict[str, int] | None:
        now = counts()
        return now if now["active"] == 0 else None

    before = until(drained, what="the queue drained of earlier messages")
    message, _ = publish.start_message("hello_cities", None, f"{run_id}-next-week")
    with sb.get_queue_sender(_queue(stack)) as sender:
        sender.schedule_messages(message, datetime.now(UTC) + timedelta(days=7))
    bad = send_raw(sb, _queue(stack), "{not json", "start")
    until(lambda: counts()["dead-letter"] == before["dead-letter"] + 1, what="one more dead letter")
    after = counts()
    assert after["scheduled"] == before["scheduled"] + 1
    assert after["active"] == before["active"]
    assert counts("/instances") == after  # the same counts beside the instance list
    page = web.get("/queue")
    row = re.search(rf'<tr data-seq="\d+" data-message-id="{bad}">(.*?)</tr>', page.text, re.S)
    assert row is not None and "InvalidJson" in row.group(1) and "{not json" in row.group(1)


def test_dead_letter_bodies_are_shown_as_text(stack: Stack, sb: ServiceBusClient, web: Web) -> None:
    bad = send_raw(sb, _queue(stack), '<script>alert("dlq")</script>', "start")
    page = until(lambda: (p := web.get("/queue")) and bad in p.text and p, what="the message in the DLQ")
    assert '<script>alert("dlq")' not in page.text
    assert "&lt;script&gt;alert(&#34;dlq&#34;)&lt;/script&gt;" in page.text


def test_new_orchestration_form_offers_the_registered_names(web: Web) -> None:
    page = web.get("/new")
    names = re.findall(r'<option value="(\w+)"', page.text)
    assert names == registry.orchestration_names()
    assert 'name="csrf_token"' in page.text


def test_static_htmx_keeps_its_licence_and_every_page_has_the_security_headers(web: Web) -> None:
    page = web.get("/instances")
    src = re.search(r'<script src="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    htmx = web.get(src)
    assert htmx.status == 200 and htmx.text.startswith("/*! htmx 2.0.11") and "Zero-Clause BSD" in htmx.text[:200]
    assert "Permission to use, copy, modify" in web.get("/static/htmx.LICENSE").text
    for path in ("/instances", "/queue", "/new", "/instance?id=nope", f"/instances?{urlencode({'q': 'x'})}"):
        headers = web.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_pages_and_wrong_methods_get_a_page_in_the_frame(web: Web) -> None:
    for path, status in (("/no/such/page", 404), ("/queue", 405)):
        page = web.get(path) if status == 404 else web.post(path, {}, follow=False)
        assert page.status == status, path
        assert 'id="error-page"' in page.text and f'data-status="{status}"' in page.text
        assert 'class="top"' in page.text and "<nav>" in page.text  # the frame: header and navigation
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "There is no page at /no/such/page." in web.get("/no/such/page").text

"""What the DTS dashboard has, against orchestrations of a worker of our own (tests/dashboard/lab.py) on the
embedded backends: rewind of a failed instance, parent and sub-orchestration links, durable entities; and, on the
product's stack, bulk actions with their confirmation and one audit line each."""

from __future__ import annotations

import json
import logging
import re
from html import unescape
from typing import Any

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.entities import EntityInstanceId

from tests.dashboard import lab
from tests.dashboard.conftest import Lab, Stack, Web, confirmed, finished
from tests.support.wait import until


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage().removeprefix("audit ")) for r in caplog.records
            if r.name == "sbworker.dashboard.audit"]


def test_rewind_runs_the_failed_work_again_and_keeps_what_succeeded(lab_stack: Lab, run_id: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    lab.repaired.clear()
    instance_id = lab_stack.client.schedule_new_orchestration(lab.fragile, instance_id=f"{run_id}-fragile")
    assert finished(lab_stack.client, instance_id).runtime_status.name == "FAILED"
    page = lab_stack.web.get(f"/instance?id={instance_id}")
    assert 'id="rewind"' in page.text and "the service is down" in page.text
    lab.repaired.set()
    steady_before = lab.calls.count("steady 1")
    with caplog.at_level(logging.INFO, logger="sbworker.dashboard.audit"):
        done = lab_stack.web.post("/instance/rewind", {"id": instance_id, "reason": "service is back"})
    assert done.notice() == "Rewind requested: the failed work runs again."
    state = finished(lab_stack.client, instance_id)
    assert state.runtime_status.name == "COMPLETED" and json.loads(state.serialized_output or "null") == [1, "done 2"]
    assert lab.calls.count("steady 1") == steady_before  # what succeeded was not run again
    [line] = audit_lines(caplog)
    assert line["action"] == "rewind" and line["instances"] == [instance_id] and line["result"] == "ok"


def test_a_parent_links_its_sub_orchestrations_and_each_links_back(lab_stack: Lab, run_id: str) -> None:
    parent_id = lab_stack.client.schedule_new_orchestration(lab.parent, instance_id=f"{run_id}-parent")
    assert finished(lab_stack.client, parent_id).runtime_status.name == "COMPLETED"
    page = lab_stack.web.get(f"/instance?id={parent_id}")
    children = [unescape(c) for c in re.findall(r'data-child="([^"]+)"', page.text)]
    assert children == [f"{parent_id}-child-0", f"{parent_id}-child-1"]
    child_page = lab_stack.web.get(f"/instance?id={children[1]}")
    parent_link = re.search(r'id="parent"><a href="([^"]+)">([^<]+)</a>', child_page.text)
    assert parent_link is not None and unescape(parent_link.group(2)) == parent_id
    assert lab_stack.web.get(unescape(parent_link.group(1))).status == 200


def test_entities_are_listed_with_their_state_and_last_change(lab_stack: Lab, run_id: str) -> None:
    entity = EntityInstanceId("counter", run_id)
    for amount in (5, 7):
        lab_stack.client.signal_entity(entity, "add", amount)

    def stored() -> Any:
        got = lab_stack.client.get_entity(entity, include_state=True)
        return got if got is not None and got.includes_state and got.get_state() == "12" else None  # JSON text

    until(stored, what="the counter at 12")
    page = lab_stack.web.get(f"/entities?prefix=counter@{run_id}")
    row = re.search(rf'<tr data-entity-id="@counter@{run_id}">(.*?)</tr>', page.text, re.S)
    assert row is not None, page.text[-2000:]
    cells = [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1),
                                                                          re.S)]
    assert cells[0] == "counter" and cells[1] == run_id and cells[5] == "12"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cells[2])
    assert "No entity starts with" in lab_stack.web.get("/entities?prefix=nothing-here").text


def test_bulk_terminate_and_purge_ask_first_then_act_on_each_and_audit_once(
        stack: Stack, dts: DurableTaskSchedulerClient, web: Web, run_id: str,
        caplog: pytest.LogCaptureFixture) -> None:
    waiting = [dts.schedule_new_orchestration("approval_workflow", input={"item": "x"}, instance_id=f"{run_id}-w{n}")
               for n in range(2)]
    ended = dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-done")
    finished(dts, ended)
    for instance_id in waiting:
        until(lambda i=instance_id: dts.get_orchestration_state(i).runtime_status.name == "RUNNING",  # type: ignore[union-attr,misc]
                 what="running")
    listing = web.get(f"/instances?prefix={run_id}")
    back = unescape(re.search(r'name="back" value="([^"]+)"', listing.text).group(1))  # type: ignore[union-attr]
    chosen = [("id", i) for i in [*waiting, ended]] + [("back", back), ("reason", "cleanup")]
    with caplog.at_level(logging.INFO, logger="sbworker.dashboard.audit"):
        asked, done = confirmed(web, "/instances/bulk/terminate", chosen)
    assert 'data-affected="2"' in asked.text and asked.text.count("will be terminated") == 2
    assert "skipped: already completed" in asked.text
    assert done.url == back and done.notice().startswith("Terminate requested for 2 of 3 instance(s).")
    for instance_id in waiting:
        assert finished(dts, instance_id).runtime_status.name == "TERMINATED"
    with caplog.at_level(logging.INFO, logger="sbworker.dashboard.audit"):
        asked, done = confirmed(web, "/instances/bulk/purge", [("id", i) for i in [*waiting, ended]] + [("back", back)])
    assert 'data-affected="3"' in asked.text
    assert done.notice() == "Purged 3 of 3 instance(s)."
    assert all(dts.get_orchestration_state(i) is None for i in [*waiting, ended])
    lines = audit_lines(caplog)
    assert [(line["action"], line["result"]) for line in lines] == [("bulk terminate", "partly"), ("bulk purge", "ok")]
    assert lines[0]["instances"] == [*waiting, ended] and lines[0]["who"] == "local user"
    assert lines[0]["outcomes"][waiting[0]] == "ok" and lines[0]["outcomes"][ended] == "skipped: already completed"
    assert lines[1]["outcomes"] == {i: "ok" for i in [*waiting, ended]}


def test_a_bulk_action_without_confirmation_changes_nothing(dts: DurableTaskSchedulerClient, web: Web,
                                                             run_id: str) -> None:
    instance_id = dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-keep")
    finished(dts, instance_id)
    page = web.post("/instances/bulk/purge", {"id": instance_id}, follow=False)
    assert page.status == 200 and 'id="confirm"' in page.text
    assert dts.get_orchestration_state(instance_id) is not None  # asking is not doing

"""The list pages through the query API (page size + continuation token) instead of reading every instance, in
the dashboard and in `sbworker list`; the name and text filters read at most a bounded number of instances per
page and say so; links carry every filter; a link whose cursor the backend no longer knows says so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.client import OrchestrationQuery, OrchestrationStatus

from sbworker import patches
from sbworker.dashboard import instances
from sbworker.operations import monitor
from sbworker.patches import dts_query
from tests.dashboard.conftest import Stack, Web


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch, run_id: str) -> Iterator[list[int]]:
    """How many instances each query-API call for this test's instances returned.

    Only queries for the test's own prefix count: the overview's sampler, started by whichever test opened the
    overview first on this shared dashboard, reads pages of every instance in the background.
    """
    sizes: list[int] = []
    original = dts_query.page_async

    async def counting(client: Any, query: OrchestrationQuery, *args: Any, **kwargs: Any) -> dts_query.StatePage:
        got = await original(client, query, *args, **kwargs)
        if query.instance_id_prefix == run_id:
            sizes.append(len(got.states))
        return got

    monkeypatch.setattr(dts_query, "page_async", counting)
    yield sizes


def link(page_text: str, rel: str) -> str | None:
    found = re.search(rf'href="(/instances\?[^"]*)" rel="{rel}"', page_text)
    return unescape(found.group(1)) if found else None


def test_the_installed_durabletask_is_one_the_paging_was_verified_with() -> None:
    """The one-page query reads the SDK's private request builder and stub: an upgrade must re-check them."""
    sdk = patches.DURABLETASK
    assert patches.verified(sdk), f"{sdk} {patches.sdk_version(sdk)} is not in {patches.VERIFIED[sdk]}"
    assert dts_query.QUERY_PAGE in patches.install() and patches.expected(sdk) == [dts_query.QUERY_PAGE,
                                                                                   patches.DTS_SPANS]


def test_a_page_is_one_request_that_hands_back_where_to_go_on(dts: DurableTaskSchedulerClient, run_id: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The patch's effect: without it the SDK's walk reads every page and leaves no token to go on from."""
    for n in range(5):
        dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-{n}")
    requests: list[int] = []
    stub = dts._stub
    monkeypatch.setattr(dts, "_stub", Counting(stub, requests))
    query = OrchestrationQuery(instance_id_prefix=run_id, max_instance_count=2)
    first = dts_query.page(dts, query)
    assert len(first.states) == 2 and first.next_token is not None and first.complete and len(requests) == 1
    seen, token = [s.instance_id for s in first.states], first.next_token
    while token is not None:
        got = dts_query.page(dts, query, token)
        seen, token = seen + [s.instance_id for s in got.states], got.next_token
    assert sorted(seen) == [f"{run_id}-{n}" for n in range(5)] and len(requests) == 3  # pages of 2, 2 and 1
    monkeypatch.setattr(dts_query, "_installed", False)  # what an unverified SDK gets: the walk, cut to one page
    walked = dts_query.page(dts, query)
    assert len(walked.states) == 2 and walked.next_token is None and not walked.complete


class Counting:
    """The client's gRPC stub, counting its QueryInstances calls."""

    def __init__(self, stub: Any, calls: list[int]) -> None:
        self._stub, self._calls = stub, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def QueryInstances(self, *args: Any, **kwargs: Any) -> Any:
        self._calls.append(1)
        return self._stub.QueryInstances(*args, **kwargs)


def test_pages_follow_the_continuation_token_with_every_filter_in_the_links(
        dts: DurableTaskSchedulerClient, web: Web, run_id: str, fetched: list[int]) -> None:
    ids = [f"{run_id}-{n:02d}" for n in range(12)]
    for instance_id in ids:  # straight to DTS: what is tested here is the list, not the queue
        dts.schedule_new_orchestration("hello_cities", instance_id=instance_id)
    first = web.get(f"/instances?prefix={run_id}&size=10")
    assert len(first.ids()) == 10 and "page 1" in first.text
    assert fetched == [10]  # one request, one page: nothing else was read
    older = link(first.text, "next")
    assert older is not None and link(first.text, "prev") is None
    assert f"prefix={run_id}" in older and "size=10" in older and "page=2" in older and "after=" in older
    second = web.get(older)
    assert len(second.ids()) == 2 and link(second.text, "next") is None
    assert sorted(first.ids() + second.ids()) == ids
    back = link(second.text, "prev")
    assert back is not None and "page=" not in back and "after=" not in back  # the first page
    assert web.get(back).ids() == first.ids()
    newest = link(second.text, "first")
    assert newest is not None and "after=" not in newest and web.get(newest).ids() == first.ids()


def test_name_and_text_filters_read_a_bounded_number_per_page(
        dts: DurableTaskSchedulerClient, web: Web, run_id: str, fetched: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(12):
        name = "hello_cities" if n % 3 == 0 else "fan_out_fan_in"
        dts.schedule_new_orchestration(name, instance_id=f"{run_id}-{n:02d}", input=[])
    monkeypatch.setattr(instances, "SCAN_PAGE", 3)
    monkeypatch.setattr(instances, "SCAN_LIMIT", 6)
    found: list[str] = []
    page = web.get(f"/instances?prefix={run_id}&name=hello_cities&size=10")
    pages = 0
    while True:
        pages += 1
        assert sum(fetched) <= 6 + 3, fetched  # never more than the limit (plus the page that crossed it)
        found += page.ids()
        if pages == 1:
            assert 'id="capped"' in page.text and "6 read to find them" in page.text
        older = link(page.text, "next")
        if older is None:
            break
        assert "name=hello_cities" in older
        fetched.clear()
        page = web.get(older)
    assert sorted(found) == [f"{run_id}-{n:02d}" for n in (0, 3, 6, 9)]  # each once, none missed
    searched = web.get(f"/instances?prefix={run_id}&q={run_id}-1&size=10")
    assert searched.ids() == [f"{run_id}-11", f"{run_id}-10"]


def test_a_page_that_ends_inside_a_query_page_goes_on_from_there(
        dts: DurableTaskSchedulerClient, web: Web, run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(23):
        dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-{n:02d}")
    monkeypatch.setattr(instances, "SCAN_PAGE", 4)  # 10 rows end inside the third query page, at its 2nd row
    seen: list[str] = []
    page = web.get(f"/instances?prefix={run_id}&name=hello_cities&size=10")
    cursors = []
    while True:
        seen += page.ids()
        older = link(page.text, "next")
        if older is None:
            break
        cursors.append(re.search(r"after=(\d+)~", older).group(1))  # type: ignore[union-attr]
        page = web.get(older)
    assert cursors[0] == "2"
    assert sorted(seen) == [f"{run_id}-{n:02d}" for n in range(23)] and len(seen) == 23


def test_a_cursor_the_backend_did_not_hand_out_is_refused_with_a_way_back(web: Web) -> None:
    page = web.get("/instances?after=0~not-a-token&page=3")
    assert page.status == 400 and "start again from the newest" in page.text
    made_up = web.get("/instances?after=garbage")
    assert made_up.status == 400 and "not one the dashboard made" in made_up.text


def test_sbworker_list_reads_only_what_it_shows(dts: DurableTaskSchedulerClient, run_id: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(5):
        dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-{n}")
    sizes: list[int] = []
    original = dts_query.page

    def counting(*args: Any, **kwargs: Any) -> dts_query.StatePage:
        got = original(*args, **kwargs)
        sizes.append(len(got.states))
        return got

    monkeypatch.setattr(dts_query, "page", counting)
    monkeypatch.setattr(monitor, "LIST_PAGE", 2)
    rows = monitor.list_instances(dts, None, 3)
    assert len(rows) == 3 and sizes == [2, 1]  # two pages: 2, then the 1 still wanted
    assert [r.created_at for r in rows] == sorted((r.created_at for r in rows), reverse=True)
    pending = monitor.list_instances(dts, [OrchestrationStatus.TERMINATED], 1000)
    assert all(r.runtime_status == OrchestrationStatus.TERMINATED for r in pending)


def test_a_page_reads_payloads_kept_in_a_payload_store(stack: Stack, run_id: str, tmp_path: Path) -> None:
    """With DTS_PAYLOAD_STORAGE the SDK keeps large payloads in a store and DTS only tokens: a page resolves them
    as the SDK's own calls do."""
    from tests.localdts.test_isolation import FolderPayloadStore

    store = FolderPayloadStore(tmp_path)
    with DurableTaskSchedulerClient(host_address=stack.settings.dts.endpoint, taskhub=stack.settings.dts.taskhub,
                                    token_credential=None, secure_channel=False, payload_store=store) as client:
        big = "p" * (300 * 1024)  # over the SDK's 256 KiB default: externalised
        instance_id = client.schedule_new_orchestration("no_worker_runs_this", input=big,
                                                        instance_id=f"{run_id}-big")
        assert store.uploads == 1
        got = dts_query.page(client, OrchestrationQuery(instance_id_prefix=instance_id, max_instance_count=5,
                                                        fetch_inputs_and_outputs=True))
    assert [s.serialized_input for s in got.states] == [f'"{big}"']

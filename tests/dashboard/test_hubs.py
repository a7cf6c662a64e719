"""The task hub selector: offered when the dashboard is told of more than one hub, remembered per browser, and
each hub's pages read through a client of that hub."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from sbworker.core import clients
from sbworker.dashboard import Dashboard, serve
from tests.dashboard.conftest import Stack, Web, finished


@pytest.fixture
def two_hubs(stack: Stack) -> Iterator[Web]:
    board: Dashboard = serve(stack.settings, port=0, taskhubs=["other-hub"])
    try:
        yield Web(f"http://127.0.0.1:{board.port}")
    finally:
        board.stop()


def chosen(page_text: str) -> str | None:
    found = re.search(r'<option value="([^"]+)" selected>', page_text[page_text.find('id="hub"'):])
    return found.group(1) if found else None


def test_one_hub_shows_no_selector(web: Web) -> None:
    assert 'id="hub-form"' not in web.get("/instances").text


def test_the_selector_switches_and_remembers_the_hub(two_hubs: Web, stack: Stack) -> None:
    page = two_hubs.get("/instances")
    assert 'id="hub-form"' in page.text and chosen(page.text) == stack.settings.dts.taskhub
    switched = two_hubs.post("/hub", {"hub": "other-hub", "next": "/overview"}, token_from="/instances")
    assert switched.url == "/overview" and chosen(switched.text) == "other-hub"
    assert "sbw_hub" in two_hubs.cookies and chosen(two_hubs.get("/queue").text) == "other-hub"
    assert chosen(two_hubs.get(f"/instances?hub={stack.settings.dts.taskhub}").text) == stack.settings.dts.taskhub
    refused = two_hubs.post("/hub", {"hub": "not-offered", "next": "/instances"}, token_from="/instances")
    assert refused.notice() == "Unknown task hub." and chosen(refused.text) == "other-hub"


def test_each_hub_lists_only_its_own_instances(two_hubs: Web, stack: Stack, dts: DurableTaskSchedulerClient,
                                               run_id: str) -> None:
    finished(dts, dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-home"))
    other = clients.dts_client(stack.settings.dts.__class__(**{**vars(stack.settings.dts), "taskhub": "other-hub"}))
    try:
        other.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-away")
    finally:
        other.close()
    home = two_hubs.get(f"/instances?prefix={run_id}")
    away = two_hubs.get(f"/instances?prefix={run_id}&hub=other-hub")
    assert home.ids() == [f"{run_id}-home"] and away.ids() == [f"{run_id}-away"]

"""The overview: instances per status and name from one bounded page per status, starts and completions per minute
from the backend's own times, the queue's depth and dead letters as the sampler saw them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient

from sbworker.core import clients
from sbworker.dashboard import Dashboard, overview, serve
from tests.dashboard.conftest import Stack, Web, finished
from tests.support.wait import until


@pytest.fixture
def fresh(stack: Stack) -> Iterator[Web]:
    """A dashboard started now: its sampler's first look reads back the hour before."""
    board: Dashboard = serve(stack.settings, port=0)
    try:
        yield Web(f"http://127.0.0.1:{board.port}")
    finally:
        board.stop()


def card(text: str, status: str) -> str:
    found = re.search(rf'data-status="{status}" data-count="([^"]+)"', text)
    assert found, status
    return found.group(1)


def bars(text: str, chart: str, series: str) -> int:
    svg = re.search(rf'<svg[^>]*id="{chart}".*?</svg>', text, re.S)
    assert svg, chart
    return sum(int(v) for v in re.findall(rf'data-series="{series}" data-value="(\d+)"', svg.group(0)))


def test_counts_per_status_and_name_and_the_chart_from_real_data(
        dts: DurableTaskSchedulerClient, fresh: Web, run_id: str) -> None:
    done = [dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-{n}") for n in range(3)]
    failed = dts.schedule_new_orchestration("not_in_the_registry", instance_id=f"{run_id}-failed")
    for instance_id in [*done, failed]:
        finished(dts, instance_id)
    page = fresh.get("/overview")
    assert page.status == 200
    assert int(card(page.text, "COMPLETED")) >= 3 and int(card(page.text, "FAILED")) >= 1
    row = re.search(r'<tr data-name="not_in_the_registry">.*?</tr>', page.text, re.S)
    assert row and re.search(r'data-status="FAILED">(\d+)<', row.group(0))
    # The sampler's first look reads back the hour: our starts and completions are among the bars. The first page
    # waits only so long for that look (FIRST_SAMPLE_WAIT), so a later page may be the one that shows them.
    def ours_drawn() -> bool:
        text = fresh.get("/overview").text
        return bars(text, "throughput-chart", "starts") >= 4 and bars(text, "throughput-chart", "completions") >= 4

    until(ours_drawn, what="our starts and completions among the throughput bars")
    # The queue's depth is sampled beside the DTS counts and may land after the first page: a later page shows it.
    until(lambda: 'data-series="active" data-value="' in _queue_chart(fresh.get("/overview").text),
          what="the queue chart's first point")


def _queue_chart(text: str) -> str:
    found = re.search(r'<svg[^>]*id="queue-chart".*?</svg>', text, re.S)
    assert found, "queue-chart"
    return found.group(0)


def test_a_count_past_one_page_is_a_lower_bound(dts: DurableTaskSchedulerClient, web: Web, run_id: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        finished(dts, dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-{n}"))
    monkeypatch.setattr(overview, "COUNT_PAGE", 2)
    page = web.get("/overview")
    assert card(page.text, "COMPLETED") == "2+"
    assert web.get("/overview?window=1h").status == 200 and web.get("/overview?window=year").status == 400


def test_the_sampler_counts_what_started_and_ended_since_its_last_look(
        stack: Stack, dts: DurableTaskSchedulerClient, run_id: str) -> None:
    async def scenario() -> tuple[int, int, overview.Minute]:
        client: AsyncDurableTaskSchedulerClient = clients.dts_async_client(stack.settings.dts)

        async def depth() -> tuple[int, int]:
            return 7, 3

        sampler = overview.Sampler(lambda: client, depth)
        try:
            await sampler.sample(datetime.now(UTC))
            starts = sum(m.starts for m in sampler.history.minutes.values())
            for n in range(2):
                await asyncio.to_thread(finished, dts, dts.schedule_new_orchestration(
                    "hello_cities", instance_id=f"{run_id}-{n}"))
            now = datetime.now(UTC) + timedelta(milliseconds=1)
            await sampler.sample(now)
            minutes = sampler.history.minutes.values()
            return (sum(m.starts for m in minutes) - starts, sum(m.completions for m in minutes),
                    sampler.history.at(now))
        finally:
            await client.close()

    started, ended, last = asyncio.run(scenario())
    assert started == 2 and ended >= 2  # ended: also whatever earlier tests' instances ended in the first hour
    assert last.active == 7 and last.dead_letter == 3


def test_charts_scale_to_a_round_top_and_mark_every_ten_minutes() -> None:
    history = overview.History()
    now = datetime(2026, 12, 6, 10, 30, 20, tzinfo=UTC)
    history.at(now).starts = 37
    history.at(now - timedelta(minutes=5)).completions = 12
    history.at(now - timedelta(minutes=90)).starts = 999  # older than the hour: dropped from the window
    minutes = history.window(now)
    assert len(minutes) == overview.HISTORY_MINUTES and minutes[-1][0] == now.replace(second=0)
    chart = overview.chart(minutes, ("starts", "completions"))
    assert chart.top == 50 and not chart.empty
    assert [label for _, label in chart.ticks] == ["09:31", "09:41", "09:51", "10:01", "10:11", "10:21"]
    values = {name: [v for _, _, v in points if v] for name, points in chart.series}
    assert values == {"starts": [37], "completions": [12]}
    assert overview.chart(history.window(now + timedelta(hours=3)), ("starts",)).empty

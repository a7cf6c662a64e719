"""The dashboard in real headless Chromium (Debian's `chromium`, driven by Playwright; nothing is downloaded):
load the list, filter, open an instance, approve through the form and watch it complete, resubmit a dead letter.

Slow (`make test-slow`). Without Chromium these tests are skipped on a laptop and FAIL in CI (`CI` set), where
.ci/run installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from sbworker.dashboard import serve
from tests.dashboard import lab
from tests.dashboard.conftest import Lab, Stack, finished, send_raw, start, waiting_for_approval
from tests.support.wait import until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium")


def _missing(what: str) -> None:
    message = f"{what}: the browser tests need Debian's chromium package and playwright (pip install '.[dev]')"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; in CI a missing browser is a failure", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browse(chromium: Any) -> Iterator[Callable[..., Any]]:
    """A new tab on a dashboard at `url`; at the end, no console error or script error may have happened."""
    opened: list[tuple[Any, list[str]]] = []

    def open_tab(url: str, width: int = 1280) -> Any:
        context = chromium.new_context(base_url=url, viewport={"width": width, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        problems: list[str] = []
        # A content-security-policy violation or a script error shows up here: none is allowed.
        tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: problems.append(str(e)))
        opened.append((context, problems))
        return tab

    yield open_tab
    for context, problems in opened:
        context.close()
        assert problems == []


@pytest.fixture
def page(browse: Callable[..., Any], stack: Stack) -> Any:
    return browse(stack.url)


def test_filter_open_an_instance_approve_it_and_watch_it_complete(page: Any, stack: Stack,
                                                                  sb: ServiceBusClient,
                                                                  dts: DurableTaskSchedulerClient,
                                                                  run_id: str) -> None:
    from playwright.sync_api import expect

    queue = stack.settings.servicebus.source.entity.name
    waiting = f"{run_id}-approval"
    start(sb, queue, "hello_cities", instance_id=f"{run_id}-hello")
    start(sb, queue, "approval_workflow", {"item": "<b>desk</b>", "amount": 640}, instance_id=waiting)
    waiting_for_approval(dts, waiting)
    finished(dts, f"{run_id}-hello")  # three activities in a row: it may still run when the other one waits

    page.goto("/instances")
    expect(page.locator("#instances")).to_be_visible()
    assert page.evaluate("typeof window.htmx") == "object"  # the vendored file loaded under the CSP
    page.fill("#filter-search", run_id)
    page.click("#apply-filters")
    expect(page.locator("#instances tbody tr")).to_have_count(2)
    page.check("input[name=status][value=RUNNING]")
    page.click("#apply-filters")
    expect(page.locator("#instances tbody tr")).to_have_count(1)
    assert "status=RUNNING" in page.url and f"q={run_id}" in page.url  # the view has a URL to share

    page.click(f"#instances a:text('{waiting}')")
    expect(page.locator("#instance-id")).to_have_text(waiting)
    expect(page.locator("#status")).to_contain_text("RUNNING")
    expect(page.get_by_text('"item": "<b>desk</b>"')).to_be_visible()  # shown as text, not markup
    page.fill("#approver", "ada")
    page.fill("#comment", "within budget")
    page.click("#approve")
    expect(page.locator("#notice")).to_contain_text("Approval sent through queue 'workflow-requests'")
    # Nobody reloads: the page refreshes itself while the instance runs, until the listener has delivered it.
    expect(page.locator("#status")).to_contain_text("COMPLETED")
    expect(page.locator("#output")).to_contain_text('"Approved"')
    expect(page.locator("#custom-status")).to_contain_text('"approver": "ada"')
    assert finished(dts, waiting).serialized_output == '"Approved"'

    page.click("nav.tabs a:text('Timeline')")
    expect(page.locator("#timeline g.bar[data-kind=wait]")).to_have_count(1)
    expect(page.locator("#timeline g.bar[data-kind=activity]")).to_have_count(1)


def test_resubmit_a_dead_letter(page: Any, stack: Stack, sb: ServiceBusClient,
                                dts: DurableTaskSchedulerClient, run_id: str) -> None:
    from playwright.sync_api import expect

    queue = stack.settings.servicebus.source.entity.name
    instance_id = f"{run_id}-early"
    early = send_raw(sb, queue, {"instance_id": instance_id, "approved": True, "approver": "grace"}, "approval")
    page.goto("/queue")
    row = page.locator(f"#dead-letters tr[data-message-id='{early}']")

    def arrived() -> bool:
        page.reload()
        return row.count() == 1

    until(arrived, what="the early approval in the dead-letter queue")
    expect(row.locator("td.reason")).to_have_text("InstanceNotFound")
    start(sb, queue, "approval_workflow", {"item": "ticket"}, instance_id=instance_id)
    waiting_for_approval(dts, instance_id)
    row.locator("input[name=seq]").check()
    page.click("#resubmit")
    expect(page.locator("#confirm-items tbody tr")).to_have_count(1)  # the confirmation names the one message
    expect(page.locator("#confirm-items")).to_contain_text(early)
    page.click("#confirm-yes")
    expect(page.locator("#notice")).to_contain_text("Resubmitted 1 message(s)")
    expect(page.locator(f"#dead-letters tr[data-message-id='{early}']")).to_have_count(0)
    assert finished(dts, instance_id).serialized_output == '"Approved"'
    page.goto(f"/instance?id={instance_id}")
    expect(page.locator("#status")).to_contain_text("COMPLETED")


def test_make_screenshots_photographs_a_real_run(chromium_path: str, tmp_path: Path) -> None:
    """`make screenshots` end to end, into a temporary folder: the script checks each page before its picture."""
    from sbworker.dashboard import screenshots

    done = subprocess.run([sys.executable, "-m", "sbworker.dashboard.screenshots", "--out", str(tmp_path), "--chromium",
                           chromium_path], cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in screenshots.ALL_PNGS:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name


def test_terminate_asks_first_and_cancel_changes_nothing(page: Any, dts: DurableTaskSchedulerClient,
                                                         run_id: str) -> None:
    from playwright.sync_api import expect

    instance_id = dts.schedule_new_orchestration("approval_workflow", input={"item": "x"},
                                                 instance_id=f"{run_id}-asked")
    until(lambda: (s := dts.get_orchestration_state(instance_id)) and s.runtime_status.name == "RUNNING",
          what="running")
    page.goto(f"/instance?id={instance_id}&refresh=0")
    page.fill("#actions input[name=reason][placeholder^='reason (becomes']", "ordered by mistake")
    page.click("#terminate")
    expect(page.locator("#confirm h1")).to_have_text("Terminate 1 instance?")
    expect(page.locator(f"#confirm-items tr[data-item='{instance_id}']")).to_contain_text("will be terminated")
    expect(page.locator("#confirm")).to_contain_text("ordered by mistake")
    page.click("#confirm-cancel")
    expect(page.locator("#instance-id")).to_have_text(instance_id)
    assert dts.get_orchestration_state(instance_id).runtime_status.name == "RUNNING"  # type: ignore[union-attr]
    page.click("#terminate")
    page.click("#confirm-yes")
    expect(page.locator("#notice")).to_have_text("Terminate requested.")
    assert finished(dts, instance_id).runtime_status.name == "TERMINATED"


def test_bulk_purge_of_the_chosen_instances(page: Any, dts: DurableTaskSchedulerClient, run_id: str) -> None:
    from playwright.sync_api import expect

    ids = [f"{run_id}-{n}" for n in range(3)]
    for instance_id in ids:
        finished(dts, dts.schedule_new_orchestration("hello_cities", instance_id=instance_id))
    page.goto(f"/instances?prefix={run_id}")
    expect(page.locator("#instances tbody tr")).to_have_count(3)
    page.check("#pick-all")  # the page's own script ticks every row
    expect(page.locator("#instances input[name=id]:checked")).to_have_count(3)
    page.uncheck(f"#instances input[name=id][value='{ids[0]}']")
    page.click("#bulk-purge")
    expect(page.locator("#confirm h1")).to_have_text("Purge 2 instances?")
    expect(page.locator("#confirm-items tbody tr")).to_have_count(2)
    page.click("#confirm-yes")
    expect(page.locator("#notice")).to_have_text("Purged 2 of 2 instance(s).")
    assert f"prefix={run_id}" in page.url  # back to the list the instances were chosen on
    expect(page.locator("#instances tbody tr")).to_have_count(1)
    assert dts.get_orchestration_state(ids[0]) is not None and dts.get_orchestration_state(ids[1]) is None


def test_rewind_a_failed_instance_from_its_page(browse: Callable[..., Any], lab_stack: Lab, run_id: str) -> None:
    from playwright.sync_api import expect

    lab.repaired.clear()
    instance_id = lab_stack.client.schedule_new_orchestration(lab.fragile, instance_id=f"{run_id}-fragile")
    assert finished(lab_stack.client, instance_id).runtime_status.name == "FAILED"
    tab = browse(lab_stack.web.base)
    tab.goto(f"/instance?id={instance_id}")
    expect(tab.locator("#status")).to_contain_text("FAILED")
    lab.repaired.set()
    tab.click("#rewind")
    expect(tab.locator("#notice")).to_contain_text("Rewind requested")
    expect(tab.locator("#status")).to_contain_text("COMPLETED")  # the page reloads itself while it runs again
    expect(tab.locator("#output")).to_contain_text('"done 2"')


def test_the_overview_draws_starts_and_completions_from_real_data(browse: Callable[..., Any], stack: Stack,
                                                                  dts: DurableTaskSchedulerClient,
                                                                  run_id: str) -> None:
    from playwright.sync_api import expect

    for n in range(4):
        finished(dts, dts.schedule_new_orchestration("hello_cities", instance_id=f"{run_id}-{n}"))
    board = serve(stack.settings, port=0)  # a dashboard started now reads back the last hour
    try:
        tab = browse(board.url)

        def starts() -> int:
            # The first page waits only so long for the sampler's first look back (FIRST_SAMPLE_WAIT): reload
            # until the bars hold our starts.
            tab.goto("/overview")
            expect(tab.locator("#throughput-chart")).to_be_visible()
            return sum(int(v) for v in tab.locator("#throughput-chart rect[data-series=starts]").evaluate_all(
                "bars => bars.map(b => b.dataset.value)"))

        until(lambda: starts() >= 4, what="our starts among the throughput bars")
        box = tab.locator("#throughput-chart rect[data-series=starts]").last.bounding_box()
        assert box is not None and box["height"] > 0 and box["width"] > 0  # drawn, not just present
        assert int(tab.locator("#status-counts a[data-status=COMPLETED] .value").inner_text().rstrip("+")) >= 4
        tab.click("#status-counts a[data-status=COMPLETED]")
        assert "status=COMPLETED" in tab.url
        tab.close()  # before its server goes
    finally:
        board.stop()


# What must hold on a 400 px wide screen, measured in the page: nothing wider than the window, every placeholder
# fully visible in its field, and each filter's label on the same line as its field.
LAYOUT_CHECK = """() => {
  const problems = [];
  if (document.documentElement.scrollWidth > window.innerWidth) {
    problems.push('page is ' + document.documentElement.scrollWidth + ' px wide');
  }
  const canvas = document.createElement('canvas').getContext('2d');
  for (const input of document.querySelectorAll('input[placeholder]')) {
    const style = getComputedStyle(input);
    canvas.font = style.font;
    const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    if (canvas.measureText(input.placeholder).width > room + 1) {
      problems.push('placeholder cut: ' + input.placeholder);
    }
    const box = input.getBoundingClientRect();
    if (box.right > window.innerWidth) {
      problems.push('field outside the window: ' + (input.id || input.name));
    }
  }
  for (const label of document.querySelectorAll('form.filters label')) {
    const field = label.querySelector('input, select');
    const words = [...label.childNodes].find(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!field || !words || field.type === 'checkbox') continue;
    const text = words.textContent.trim();
    const range = document.createRange();
    range.selectNodeContents(words);
    const where = range.getBoundingClientRect(), box = field.getBoundingClientRect();
    if (Math.abs((where.top + where.bottom) / 2 - (box.top + box.bottom) / 2) > box.height) {
      problems.push('label "' + text + '" not beside its field');
    }
  }
  return problems;
}"""


def test_every_page_works_400_px_wide(browse: Callable[..., Any], stack: Stack, dts: DurableTaskSchedulerClient,
                                      sb: ServiceBusClient, run_id: str) -> None:
    from playwright.sync_api import expect

    instance_id = f"{run_id}-narrow-{'x' * 40}"
    finished(dts, dts.schedule_new_orchestration("hello_cities", instance_id=instance_id))
    send_raw(sb, stack.settings.servicebus.source.entity.name, "not json", "start")
    tab = browse(stack.url, width=400)
    for path in ("/instances", "/overview", "/queue", "/entities", f"/instance?id={instance_id}",
                 f"/instance/timeline?id={instance_id}", "/new", "/login"):
        tab.goto(path)
        assert tab.evaluate(LAYOUT_CHECK) == [], path
    tab.goto(f"/instances?prefix={run_id}")
    row = tab.locator(f"#instances tr[data-instance-id='{instance_id}']")
    expect(row.locator("td.id a")).to_be_visible()
    expect(row.locator(".status")).to_be_visible()
    badge = row.locator(".status").bounding_box()
    assert badge is not None and badge["x"] + badge["width"] <= 400  # the status whole, without scrolling
    from_box = tab.locator("#filter-from").bounding_box()
    to_box = tab.locator("#filter-to").bounding_box()
    assert from_box and to_box and abs(from_box["x"] - to_box["x"]) < 2  # "from" and "to" line up, one each
    tab.goto("/queue")
    assert tab.locator("body").inner_text().count("Queue workflow-requests") == 1  # the queue's title once

"""The dashboard in real headless Chromium (Debian's `chromium`, driven by Playwright; nothing is downloaded):
load the list, filter, open an instance, approve through the form and watch it complete, resubmit a dead letter.

Slow (`make test-slow`). Without Chromium these tests are skipped on a laptop and FAIL in CI (`CI` set), where
.ci/run installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from tests.dashboard.conftest import Stack, finished, send_raw, start, waiting_for_approval
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
def page(chromium: Any, stack: Stack) -> Iterator[Any]:
    context = chromium.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    problems: list[str] = []
    # A content-security-policy violation or a script error shows up here: none is allowed.
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))
    yield tab
    context.close()
    assert problems == []


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
    for name in (screenshots.LIST_PNG, screenshots.TIMELINE_PNG, screenshots.APPROVAL_PNG, screenshots.DLQ_PNG):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name

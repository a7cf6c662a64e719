"""`make screenshots`: the README's pictures of the dashboard, taken from a real run so they stay true.

It starts the embedded stack in this process (localbus, localdts, the listener and worker, the dashboard), sends
real messages through the queue (the four workflows, a retried one, one waiting for approval, a scheduled start,
two invalid messages), waits for each outcome, and photographs the pages in headless Chromium. Before each
picture it checks that the page shows what the picture is meant to show, and fails otherwise.

    python -m sbworker.dashboard.screenshots [--out docs/images] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from azure.servicebus import ServiceBusMessage

from sbworker import localstack
from sbworker.core import clients
from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.config import Settings
from sbworker.dashboard import serve
from sbworker.operations import demo, publish

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("docs/images")
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1360, 860

LIST_PNG = "dashboard-instances.png"
TIMELINE_PNG = "dashboard-timeline.png"
APPROVAL_PNG = "dashboard-approval.png"
DLQ_PNG = "dashboard-dlq.png"
OVERVIEW_PNG = "dashboard-overview.png"
CONFIRM_PNG = "dashboard-confirm.png"
NARROW_PNG = "dashboard-narrow.png"
ALL_PNGS = (LIST_PNG, TIMELINE_PNG, APPROVAL_PNG, DLQ_PNG, OVERVIEW_PNG, CONFIRM_PNG, NARROW_PNG)
NARROW_WIDTH = 400


def populate(settings: Settings, run: str) -> dict[str, str]:
    """Real traffic through the queue; returns the instance ids the pictures show."""
    source = settings.servicebus.source
    demo.run_demo(settings, lambda line: log.info("demo: %s", line.strip()))
    ids = {
        "retry": f"order-{run}-retried",
        "compensated": f"order-{run}-compensated",
        "waiting": f"order-{run}-approval",
        "scheduled": f"order-{run}-tomorrow",
    }
    with clients.servicebus_sync_client(settings.servicebus) as sb:
        def start(name: str, data: Any, instance_id: str, start_at: datetime | None = None) -> None:
            message, _ = publish.start_message(name, data, instance_id, start_at)
            publish.send(sb, source, message)

        start("workflow_with_retry", {"fail_times": 2, "retry": {"first_retry_seconds": 1, "backoff": 1.5}},
              ids["retry"])
        start("workflow_with_retry", {"always_fail": True, "retry": {"first_retry_seconds": 1, "max_attempts": 2}},
              ids["compensated"])
        start("approval_workflow", {"item": "standing desk", "amount": 640, "requested_by": "grace"}, ids["waiting"])
        # DTS holds this one as PENDING until tomorrow (start_at) …
        start("hello_cities", None, ids["scheduled"], datetime.now(UTC) + timedelta(days=1))
        # … and Service Bus holds this one until tomorrow (a scheduled message): the queue's "scheduled" count.
        later, _ = publish.start_message("fan_out_fan_in", ["Lisbon", "Oslo"], f"order-{run}-next-week")
        with source.sender(sb) as sender:
            sender.schedule_messages(later, datetime.now(UTC) + timedelta(days=7))
        # Two messages the listener dead-letters, with the reasons the contract gives.
        publish.send(sb, source, ServiceBusMessage(
            json.dumps({"instance_id": ids["waiting"], "approved": "yes", "approver": "mallory"}),
            subject="approval", content_type="application/json", message_id=f"bad-approval-{run}"))
        publish.send(sb, source, ServiceBusMessage(
            json.dumps({"orchestration": "send_invoices", "input": {"month": "2026-11"}}),
            subject="start", content_type="application/json", message_id=f"unknown-{run}"))
    with clients.dts_client(settings.dts) as dts:
        for key in ("retry", "compensated"):
            _until(partial(_terminal, dts, ids[key]), f"{ids[key]} to finish")
        _until(lambda: "awaiting_approval" in (_custom(dts, ids["waiting"]) or ""), f"{ids['waiting']} to wait")
    return ids


def _terminal(dts: Any, instance_id: str) -> bool:
    state = dts.get_orchestration_state(instance_id)
    return state is not None and state.runtime_status in TERMINAL_STATUSES


def _custom(dts: Any, instance_id: str) -> str | None:
    state = dts.get_orchestration_state(instance_id)
    return None if state is None else state.serialized_custom_status


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.1)


def photograph(base: str, ids: dict[str, str], out: Path, chromium: str) -> list[Path]:
    """One picture per view; each waits for, and checks, the content it is meant to show."""
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT}, device_scale_factor=1)

        page.goto(f"{base}/instances")
        expect(page.locator("#instances tbody tr")).to_have_count(_instances(ids))
        _until(lambda: page.locator("#count-dead-letter").inner_text().strip() == "2", "two dead letters",
               timeout=30)
        page.reload()
        taken.append(_shot(page, out / LIST_PNG))

        page.goto(f"{base}/instance/timeline?{urlencode({'id': ids['retry']})}")
        expect(page.locator("#timeline g.bar[data-kind=activity]")).to_have_count(3)
        taken.append(_shot(page, out / TIMELINE_PNG))

        page.goto(f"{base}/instance?{urlencode({'id': ids['waiting'], 'refresh': 0})}")
        expect(page.locator("#approval-form")).to_be_visible()
        page.fill("#approver", "ada")
        page.fill("#comment", "within budget")
        taken.append(_shot(page, out / APPROVAL_PNG))

        page.goto(f"{base}/queue")
        expect(page.locator("#dead-letters tbody tr")).to_have_count(2)
        expect(page.locator("#count-scheduled")).to_have_text("1")
        taken.append(_shot(page, out / DLQ_PNG))

        page.goto(f"{base}/overview")
        expect(page.locator("#status-counts a[data-status=COMPLETED]")).to_be_visible()
        expect(page.locator("#throughput-chart rect[data-series=starts]").first).to_be_visible()
        taken.append(_shot(page, out / OVERVIEW_PNG))

        # The confirmation step of a bulk terminate (cancelled: the pictures above must stay true).
        page.goto(f"{base}/instances?{urlencode({'status': ['RUNNING', 'PENDING']}, doseq=True)}")
        expect(page.locator("#instances tbody tr")).to_have_count(2)
        page.check("#pick-all")
        page.fill("#bulk-reason", "duplicate orders")
        page.click("#bulk-terminate")
        expect(page.locator("#confirm-items tbody tr")).to_have_count(2)
        taken.append(_shot(page, out / CONFIRM_PNG))
        page.click("#confirm-cancel")

        narrow = browser.new_page(viewport={"width": NARROW_WIDTH, "height": VIEWPORT_HEIGHT}, device_scale_factor=1)
        narrow.goto(f"{base}/instances")
        expect(narrow.locator("#instances tbody tr")).to_have_count(_instances(ids))
        if narrow.evaluate("document.documentElement.scrollWidth") > NARROW_WIDTH:
            raise RuntimeError(f"the instance list is wider than {NARROW_WIDTH} px")
        taken.append(_shot(narrow, out / NARROW_PNG))
        browser.close()
    return taken


def _instances(ids: dict[str, str]) -> int:
    """The demo's instances and the ones populate() started (the fan-out Service Bus holds for next week is none)."""
    return len(demo.DEMO_INPUTS) + len(ids)


def _shot(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    log.info("wrote %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbworker.dashboard.screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the pictures (default {DEFAULT_OUT})")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM, help=f"Chromium to drive (default {DEFAULT_CHROMIUM})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("azure", "durabletask", "localbus", "localdts", "listener", "grpc", "orchestrations", "activities"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not Path(args.chromium).exists():
        print(f"screenshots: no Chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    with localstack.local_stack() as stack:
        board = serve(stack.settings, port=0)
        try:
            ids = populate(stack.settings, uuid.uuid4().hex[:4])
            for path in photograph(board.url, ids, args.out, args.chromium):
                print(path)
        finally:
            board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One embedded stack per test file (localbus, localdts, the real listener + worker, the dashboard) and a small
HTTP client that behaves like a browser where it matters here: it keeps cookies and posts the CSRF token."""

from __future__ import annotations

import json
import re
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode, urlsplit
from urllib.request import HTTPRedirectHandler, HTTPSHandler, Request, build_opener

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker
from durabletask.client import OrchestrationState

from sbworker import localstack
from sbworker.core import clients
from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.entities import queue_source
from sbworker.dashboard import Dashboard, serve
from sbworker.operations import publish
from tests.dashboard import lab
from tests.support.wait import until

# An approval for an instance that does not exist is dead-lettered at once: the DLQ tests need a valid message
# that lands there (and can be resubmitted once its instance exists).
STACK_ENV = {"APPROVAL_NOT_FOUND_WINDOW_SECONDS": "0"}


@dataclass
class Stack:
    """The embedded stack (sbworker.localstack) with the dashboard in front of it, as `sbworker dev` runs them."""

    local: localstack.LocalStack
    board: Dashboard

    @property
    def settings(self) -> Any:
        return self.local.settings

    @property
    def servicebus_connection(self) -> str:
        return self.local.servicebus_connection

    @property
    def url(self) -> str:
        return self.board.url


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with localstack.local_stack(STACK_ENV) as running:
        board = serve(running.settings, port=0)
        try:
            yield Stack(running, board)
        finally:
            board.stop()


@dataclass
class Lab:
    client: DurableTaskSchedulerClient
    web: Web


@pytest.fixture(scope="module")
def lab_stack() -> Iterator[Lab]:
    """The embedded backends with a worker of our own (tests/dashboard/lab.py) and a dashboard, no service."""
    with localstack.backends({"HEALTH_PORT": "0"}) as parts:
        worker = DurableTaskSchedulerWorker(host_address=parts.settings.dts.endpoint,
                                            taskhub=parts.settings.dts.taskhub, token_credential=None,
                                            secure_channel=False)
        lab.register(worker)
        worker.start()
        board: Dashboard = serve(parts.settings, port=0)
        client = clients.dts_client(parts.settings.dts)
        try:
            yield Lab(client, Web(f"http://127.0.0.1:{board.port}"))
        finally:
            client.close()
            board.stop()
            worker.stop()


@pytest.fixture(scope="module")
def dts(stack: Stack) -> Iterator[DurableTaskSchedulerClient]:
    client = clients.dts_client(stack.settings.dts)
    yield client
    client.close()


@pytest.fixture(scope="module")
def sb(stack: Stack) -> Iterator[ServiceBusClient]:
    with clients.servicebus_sync_client(stack.settings.servicebus) as client:
        yield client


@pytest.fixture
def web(stack: Stack) -> Web:
    return Web(f"http://127.0.0.1:{stack.board.port}")


@pytest.fixture
def run_id() -> str:
    """A prefix for this test's instance ids: tests share the stack, never their instances."""
    return f"t{uuid.uuid4().hex[:8]}"


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    url: str

    def token(self) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def notice(self) -> str:
        found = re.search(r'<p class="notice[^"]*"[^>]*id="notice">(.*?)</p>', self.text, re.S)
        return unescape(found.group(1)) if found else ""

    def ids(self) -> list[str]:
        return [unescape(v) for v in re.findall(r'<tr data-instance-id="([^"]*)"', self.text)]


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Web:
    """GET and POST over a real socket; cookies kept, redirects followed by hand (so tests can see them)."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None  # for a server with a self-signed certificate
    raw_cookies: list[str] = field(default_factory=list)  # every Set-Cookie seen, attributes and all

    def request(self, method: str, path: str, data: dict[str, Any] | list[tuple[str, str]] | None = None,
                headers: dict[str, str] | None = None) -> Page:
        body = urlencode(data, doseq=True).encode() if data is not None else None
        request = Request(self.base + path, data=body, method=method, headers=dict(headers or {}))
        if self.cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            handlers: list[Any] = [_NoRedirect()]
            if self.tls is not None:
                handlers.append(HTTPSHandler(context=self.tls))
            response = build_opener(*handlers).open(request, timeout=30)
            status, raw, head = response.status, response.read(), response.headers
        except HTTPError as error:
            status, raw, head = error.code, error.read(), error.headers
        for cookie in head.get_all("Set-Cookie") or []:
            self.raw_cookies.append(cookie)
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie or "expires=Thu, 01 Jan 1970" in cookie or value in ("", '""'):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return Page(status, raw.decode("utf-8", "replace"), head, path)

    def get(self, path: str, **kwargs: Any) -> Page:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, Any], *, token_from: str = "/new", follow: bool = True,
             headers: dict[str, str] | None = None) -> Page:
        """POST a form as the browser would: with the page's CSRF token and this origin."""
        form = dict(data)
        form.setdefault("csrf_token", self.get(token_from).token())
        page = self.request("POST", path, form, headers={"Origin": self.base, **(headers or {})})
        if follow and page.status == 303:
            location = page.headers["Location"]
            return self.get(location if location.startswith("/") else urlsplit(location).path)
        return page


def confirmed(web: Web, path: str, data: dict[str, Any] | list[tuple[str, str]], *, token_from: str = "/new"
              ) -> tuple[Page, Page]:
    """POST a form whose action asks first (terminate, purge, delete, resubmit, every bulk action): check that
    the first answer is the confirmation page, then submit its form as the browser would. (asked, result)."""
    form = dict(data) if isinstance(data, dict) else list(data)
    pairs = list(form.items()) if isinstance(form, dict) else form
    pairs = [*pairs, ("csrf_token", web.get(token_from).token())]
    asked = web.request("POST", path, pairs, headers={"Origin": web.base})
    assert asked.status == 200 and 'id="confirm"' in asked.text, (asked.status, asked.text[:300])
    block = re.search(r'<form method="post" action="([^"]+)"[^>]*id="confirm-form">(.*?)</form>', asked.text, re.S)
    assert block is not None and unescape(block.group(1)) == path
    fields = [(unescape(k), unescape(v)) for k, v in
              re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', block.group(2))]
    assert ("confirmed", "yes") in fields
    done = web.request("POST", path, fields, headers={"Origin": web.base})
    if done.status == 303:
        location = done.headers["Location"]
        done = web.get(location if location.startswith("/") else urlsplit(location).path)
    return asked, done


def start(sb: ServiceBusClient, queue: str, name: str, data: Any = None, instance_id: str | None = None) -> str:
    """Publish a start message, as `sbworker publish start` does; returns the message id."""
    message, _ = publish.start_message(name, data, instance_id)
    publish.send(sb, queue_source(queue), message)
    return str(message.message_id)


def send_raw(sb: ServiceBusClient, queue: str, body: Any, subject: str, message_id: str | None = None) -> str:
    mid = message_id or uuid.uuid4().hex
    payload = body if isinstance(body, str) else json.dumps(body)
    publish.send(sb, queue_source(queue), ServiceBusMessage(payload, subject=subject, content_type="application/json",
                                             message_id=mid))
    return mid


def finished(dts: DurableTaskSchedulerClient, instance_id: str) -> OrchestrationState:
    def check() -> OrchestrationState | None:
        state = dts.get_orchestration_state(instance_id)
        return state if state is not None and state.runtime_status in TERMINAL_STATUSES else None

    result: OrchestrationState = until(check, what=f"{instance_id} to finish")
    return result


def waiting_for_approval(dts: DurableTaskSchedulerClient, instance_id: str) -> OrchestrationState:
    def check() -> OrchestrationState | None:
        state = dts.get_orchestration_state(instance_id)
        return state if state is not None and "awaiting_approval" in (state.serialized_custom_status or "") else None

    result: OrchestrationState = until(check, what=f"{instance_id} to wait for approval")
    return result


def running(dts: DurableTaskSchedulerClient, instance_id: str) -> str:
    """Start an approval_workflow (it waits for its decision) and return once it runs: something to act on."""
    dts.schedule_new_orchestration("approval_workflow", input={"item": "x"}, instance_id=instance_id)
    until(lambda: (s := dts.get_orchestration_state(instance_id)) and s.runtime_status.name == "RUNNING",
          what=f"{instance_id} to run")
    return instance_id

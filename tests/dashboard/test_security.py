"""The safety rules over real HTTP: CSRF and same-origin on every POST, loopback Host only, no secret rendered,
and the server's own contract (port in use → one-line ConfigError, a warning for a non-loopback bind)."""

from __future__ import annotations

import re
import socket

import pytest
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from sbworker.core.errors import ConfigError
from sbworker.dashboard import serve
from tests.dashboard.conftest import Stack, Web, running
from tests.support.wait import until

POSTS = ("/instance/terminate", "/instance/purge", "/instance/approve", "/new", "/queue/dead-letters/resubmit",
         "/queue/dead-letters/delete")


@pytest.fixture
def victim(dts: DurableTaskSchedulerClient, run_id: str) -> str:
    """A running instance that a forged request would terminate."""
    return running(dts, f"{run_id}-victim")


def _running(dts: DurableTaskSchedulerClient, instance_id: str) -> bool:
    state = dts.get_orchestration_state(instance_id)
    return state is not None and state.runtime_status.name == "RUNNING"


def test_a_post_without_the_csrf_token_is_refused(web: Web, dts: DurableTaskSchedulerClient, victim: str) -> None:
    web.get("/new")  # the cookie is set, but the form field is missing
    for path in POSTS:
        page = web.request("POST", path, {"id": victim}, headers={"Origin": web.base})
        assert page.status == 403 and "bad CSRF token" in page.text, path
    wrong = web.request("POST", "/instance/terminate", {"id": victim, "csrf_token": "x" * 43},
                        headers={"Origin": web.base})
    assert wrong.status == 403
    assert _running(dts, victim)


def test_a_token_without_its_cookie_is_refused(web: Web, dts: DurableTaskSchedulerClient, victim: str) -> None:
    token = web.get("/new").token()
    web.cookies.clear()  # another site's form can copy a token, never our SameSite=Strict cookie
    page = web.request("POST", "/instance/terminate", {"id": victim, "csrf_token": token},
                       headers={"Origin": web.base})
    assert page.status == 403 and "missing CSRF cookie" in page.text
    assert _running(dts, victim)


def test_cross_origin_posts_are_refused_even_with_a_valid_token(web: Web, dts: DurableTaskSchedulerClient,
                                                                victim: str) -> None:
    token = web.get("/new").token()
    form = {"id": victim, "csrf_token": token, "confirmed": "yes"}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page"}, {"Origin": web.base, "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://["}, {"Referer": "http://[x/page"}):  # not URLs: refused, not a 500
        page = web.request("POST", "/instance/terminate", form, headers=headers)
        assert page.status == 403 and "cross-" in page.text, headers
    assert _running(dts, victim)
    allowed = web.request("POST", "/instance/terminate", form, headers={"Origin": web.base})
    assert allowed.status == 303  # the same request from our own page works
    until(lambda: not _running(dts, victim), what="terminated")


def test_no_secret_is_rendered(stack: Stack, web: Web) -> None:
    key = re.search(r"SharedAccessKey=([^;]+)", stack.servicebus_connection).group(1)  # type: ignore[union-attr]
    for path in ("/instances", "/queue", "/new", "/instance?id=x", "/instance/messages?id=x"):
        page = web.get(path)
        assert key not in page.text and "SharedAccessKey" not in page.text, path
    assert f"sb://localhost:{stack.servicebus_connection.split(':')[2].split(';')[0]}" in web.get("/queue").text


def test_serve_refuses_a_busy_port_in_one_line(stack: Stack) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as raised:
            serve(stack.settings, port=port)
    assert str(raised.value) == f"configuration error: dashboard: port {port} on 127.0.0.1 is in use"


def test_serve_reports_its_url_and_stops(stack: Stack) -> None:
    board = serve(stack.settings, port=0)
    try:
        assert board.port > 0 and board.url == f"http://localhost:{board.port}"
        with socket.create_connection(("127.0.0.1", board.port), timeout=5):
            pass
    finally:
        board.stop()
    board.stop()  # twice is fine
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", board.port), timeout=5):
        pass

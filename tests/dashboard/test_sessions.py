"""The dashboard in session mode (SERVICEBUS_SESSIONS=true) on the shipped Config.json's session-enabled queue:
the queue page peeks it (a plain receive link is refused there), counts the sessions with an active message and
names each dead letter's session; an instance's messages name theirs; the start and approval forms send in the
instance's session, or in the one the form names."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from sbworker import localstack
from sbworker.core import clients
from sbworker.dashboard import serve
from sbworker.operations.publisher import Publisher
from tests.dashboard.conftest import Web, waiting_for_approval
from tests.support.wait import until

SESSIONS = {"SERVICEBUS_SESSIONS": "true", "MAX_CONCURRENT_SESSIONS": "4", "HEALTH_PORT": "0"}


def _counts(web: Web) -> dict[str, int]:
    text = web.get("/queue").text
    return {k: int(v) for k, v in re.findall(r'<dd id="count-([\w-]+)">(?:<a href="/queue">)?(\d+)', text)}


@contextmanager
def _served(settings: Any) -> Iterator[tuple[Any, Web]]:
    dashboard = serve(settings, port=0)
    try:
        yield settings, Web(f"http://127.0.0.1:{dashboard.port}")
    finally:
        dashboard.stop()


@pytest.fixture(scope="module")
def board() -> Iterator[tuple[Any, Web]]:
    """The session-enabled queue with the dashboard in front and no listener: what is sent stays there."""
    with localstack.backends(SESSIONS) as parts, _served(parts.settings) as served:
        yield served


def test_the_queue_page_peeks_a_session_queue_counts_its_sessions_and_names_each_dead_letters(
        board: tuple[Any, Web]) -> None:
    settings, web = board
    queue = settings.servicebus.source.entity.name
    before = _counts(web)
    assert "sessions" in before  # shown only in session mode
    with clients.servicebus_sync_client(settings.servicebus) as sb:
        with sb.get_queue_sender(queue) as sender:
            sender.send_messages([ServiceBusMessage("{}", subject="start", session_id=s, message_id=f"{s}-{i}")
                                  for s, i in (("alpha", 0), ("alpha", 1), ("beta", 0))])
        with sb.get_queue_receiver(queue, session_id="beta", max_wait_time=5) as receiver:
            [taken] = receiver.receive_messages(max_wait_time=5)
            receiver.dead_letter_message(taken, reason="Test", error_description="to be seen")
    after = until(lambda: (c := _counts(web)) and c["dead-letter"] == before["dead-letter"] + 1 and c,
                  what="the dead letter counted")
    assert (after["active"], after["sessions"]) == (before["active"] + 2, before["sessions"] + 1)
    row = re.search(r'<tr data-seq="\d+" data-message-id="beta-0">(.*?)</tr>', web.get("/queue").text, re.S)
    assert row is not None and '<td class="id session">beta</td>' in row.group(1)


def test_an_instances_messages_name_their_session(board: tuple[Any, Web]) -> None:
    settings, web = board
    with clients.servicebus_sync_client(settings.servicebus) as sb, \
            sb.get_queue_sender(settings.servicebus.source.entity.name) as sender:
        sender.send_messages(ServiceBusMessage('{"orchestration": "hello_cities", "instance_id": "not-yet"}',
                                               subject="start", session_id="customer-9", message_id="start-not-yet"))
    page = web.get("/instance?id=not-yet")
    queued = re.search(r'<table class="plain" id="queued">(.*?)</table>', page.text, re.S)
    assert queued is not None and "start-not-yet" in queued.group(1)
    assert '<td class="id session">customer-9</td>' in queued.group(1)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Any, Web]]:
    """The whole product in session mode, with the dashboard."""
    with localstack.local_stack(SESSIONS) as running, _served(running.settings) as served:
        yield served


def _settled_in(caplog: pytest.LogCaptureFixture, notice: str, session: str) -> None:
    """The message the notice names was settled by the listener, in `session` (its log line says so)."""
    found = re.search(r"message (\w+)", notice)
    assert found is not None, notice

    def settled() -> bool:
        return any(f"message_id={found.group(1)} " in r.getMessage() and r.getMessage().endswith(
            f" session_id={session}") for r in caplog.records)

    until(settled, what=f"message {found.group(1)} settled in session {session}")


def test_the_start_form_sends_in_the_instances_session_or_the_one_named(stack: tuple[Any, Web],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    _, web = stack
    caplog.set_level(logging.INFO, logger="listener.settler")
    for instance_id, named in (("form-own-session", ""), ("form-named-session", "customer-7")):
        page = web.post("/new", {"orchestration": "hello_cities", "input": "", "instance_id": instance_id,
                                 "start_at": "", "session_id": named})
        _settled_in(caplog, page.notice(), named or instance_id)


def test_the_approval_form_sends_in_the_session_it_names(stack: tuple[Any, Web],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    settings, web = stack
    caplog.set_level(logging.INFO, logger="listener.settler")
    with Publisher.from_settings(settings) as publisher:
        sent = publisher.start("approval_workflow", {"item": "desk"}, instance_id="form-approval")
    assert sent.session_id == "form-approval"
    with clients.dts_client(settings.dts) as dts:
        waiting_for_approval(dts, sent.instance_id)
    page = web.post("/instance/approve", {"id": sent.instance_id, "decision": "approve", "approver": "ada",
                                          "comment": "", "session_id": "customer-7"},
                    token_from=f"/instance?id={sent.instance_id}")
    _settled_in(caplog, page.notice(), "customer-7")


def test_without_the_patch_a_plain_receiver_cannot_peek_a_session_queue(board: tuple[Any, Web]) -> None:
    """What sbworker.patches.session_peek is for: the SDK alone opens a receive link first, which the entity
    refuses (and a session receiver would take a session to peek it)."""
    settings, _ = board
    with clients.servicebus_sync_client(settings.servicebus) as sb:
        receiver = sb.get_queue_receiver(settings.servicebus.source.entity.name)
        with pytest.raises(Exception, match="requires sessions"):
            receiver.peek_messages(max_message_count=1)
        receiver.close()

"""The SQL filter engine against a hostile operator (issue 27, item 4).

Each test reproduces a finding first: ``LIKE '%a%a%a%b'`` backtracked catastrophically (1,200 characters took
37.5 s and stalled every other client); 10,000 nested parentheses or 100,000 ``NOT``s crashed start-up with a
``RecursionError`` traceback; a 5,000-term ``AND`` chain loaded and then failed every send. Timings are never
asserted here: ``bench/localbus_bench.py --filters`` prints them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Message

from localbus import LocalBus
from localbus.cli import main as cli_main
from localbus.config import ConfigError
from localbus.sqlfilter import MAX_DEPTH, MAX_EXPRESSION_LENGTH, FilterError, MessageView, compile_sql

from .rawclient import sas_token
from .rawframes import DISPOSITION, SENDER, RawConnection, transfer_frame
from .sdk import client, sender


def _sql(name: str, expression: str) -> dict[str, Any]:
    return {"Name": name, "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": expression}}}


def _like(value: str, pattern: str, escape: str | None = None) -> bool:
    clause = f" ESCAPE '{escape}'" if escape is not None else ""
    quoted = pattern.replace("'", "''")
    return bool(compile_sql(f"p LIKE '{quoted}'{clause}")(MessageView(user={"p": value})))


def _reference_like(value: str, pattern: str) -> bool:
    """LIKE by dynamic programming over (pattern, value) prefixes: obviously right, quadratic, for comparison."""
    reachable = [True] + [False] * len(value)  # which value prefixes the pattern prefix read so far can match
    for c in pattern:
        if c == "%":
            for i in range(1, len(value) + 1):
                reachable[i] = reachable[i] or reachable[i - 1]
        else:
            reachable = [False] + [reachable[i] and (c == "_" or value[i] == c) for i in range(len(value))]
    return reachable[-1]


# --- LIKE without backtracking -------------------------------------------------------------------------------

ADVERSARIAL = [
    ("%a%a%a%b", "a" * 10_000, False),  # the finding (with 1,200 characters it took 37.5 s)
    ("%a%a%a%b", "a" * 10_000 + "b", True),
    ("%" + "a%" * 49 + "b", "a" * 10_000, False),  # 100 characters, 50 wildcards
    ("a_" * 49 + "ab", "a" * 10_000, False),  # one long fixed segment: checked at the one place it can sit
    ("%" + "a_" * 49 + "b", "a" * 10_000, False),  # ... and at every place
    ("%" + "a_" * 49 + "b", "a" * 9_901 + "b", True),
    ("%" + "a_" * 49 + "b", "ab" * 5_000, False),
    ("%" + "_" * 98 + "%", "x" * 10_000, True),
    ("%" + "ab%" * 33, "ab" * 5_000, True),
    ("%" + "aab%" * 24 + "c", "aab" * 3_333 + "a", False),
    # a trailing % leaves the end unanchored, so each piece is searched to the end of the value
    ("%a%a%a%b%", "a" * 10_000, False),
    ("%" + "a%" * 48 + "b%", "a" * 10_000, False),
    ("%" + "a" * 97 + "b%", "a" * 10_000, False),
    ("%" + "a_" * 48 + "b%", "a" * 10_000, False),
    ("%" + "a_" * 48 + "b%", "a" * 5_000 + "b" + "a" * 4_999, True),
    ("%" + "aab%" * 24 + "c%", "aab" * 3_333 + "a", False),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), ADVERSARIAL)
def test_like_is_correct_on_adversarial_patterns_of_up_to_100_characters(pattern: str, value: str,
                                                                          expected: bool) -> None:
    assert len(pattern) <= 100 and len(value) >= 9_900
    assert _like(value, pattern) is expected


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(alphabet="ab%_", max_size=12), value=st.text(alphabet="abc", max_size=14))
def test_like_agrees_with_the_reference_definition(pattern: str, value: str) -> None:
    assert _like(value, pattern) is _reference_like(value, pattern)


@pytest.mark.parametrize(("pattern", "escape", "value", "expected"), [
    ("100!%", "!", "100%", True), ("100!%", "!", "1000", False), ("a!_c", "!", "a_c", True),
    ("a!_c", "!", "abc", False), ("%!%%", "!", "50% off", True), ("a!!b", "!", "a!b", True),
    ("a%", None, "a\nb", True), ("_", None, "\n", True), ("", None, "", True), ("", None, "x", False),
    ("%", None, "", True), ("a%b%c", None, "abc", True), ("a%b%c", None, "acb", False),
    ("ab%ba", None, "aba", False), ("ab%ba", None, "abba", True),
])
def test_like_escape_and_edge_cases(pattern: str, escape: str | None, value: str, expected: bool) -> None:
    assert _like(value, pattern, escape) is expected


def test_like_on_a_non_string_or_missing_property_is_unknown() -> None:
    assert compile_sql("p LIKE '%'")(MessageView(user={"p": 5})) is False
    assert compile_sql("NOT p LIKE '%'")(MessageView(user={})) is False  # unknown, and NOT unknown is unknown
    assert compile_sql("p NOT LIKE 'a%'")(MessageView(user={"p": b"abc"})) is False  # bytes read as text


# --- bounds: refused at load, one line, never a traceback ---------------------------------------------------

def _and_chain(terms: int) -> str:
    return " AND ".join(f"p{i} = {i}" for i in range(terms))


HOSTILE = {
    "and-chain": (_and_chain(5_000), f"longer than {MAX_EXPRESSION_LENGTH:,} characters"),
    "parentheses": ("(" * 10_000 + "p = 1" + ")" * 10_000, f"longer than {MAX_EXPRESSION_LENGTH:,} characters"),
    "nots": ("NOT " * 100_000 + "p = 1", f"longer than {MAX_EXPRESSION_LENGTH:,} characters"),
    "deep-parentheses": ("(" * 300 + "p = 1" + ")" * 300, f"nested more than {MAX_DEPTH} levels deep"),
    "deep-nots": ("NOT " * 200 + "p = 1", f"nested more than {MAX_DEPTH} levels deep"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_filter_past_the_bounds_is_refused_at_load_with_one_line_naming_the_rule(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expression, rule = HOSTILE[name]
    document = {"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [], "Topics": [
        {"Name": "t", "Subscriptions": [{"Name": "s", "Rules": [_sql(name, expression)]}]}]}]}}
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(document))
    assert cli_main(["--config", str(path), "--port", "0"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err and "RecursionError" not in err, err
    assert f"rule {name!r}" in err and "subscription t/s" in err and rule in err, err
    assert len(err) < 400  # the offending expression is not echoed back in full


def test_the_bounds_are_exactly_where_the_readme_says() -> None:
    deepest = "(" * (MAX_DEPTH - 1) + "p = 1" + ")" * (MAX_DEPTH - 1)
    assert compile_sql(deepest)(MessageView(user={"p": 1})) is True
    assert compile_sql("NOT " * (MAX_DEPTH - 1) + "p = 1")(MessageView(user={"p": 1})) is ((MAX_DEPTH - 1) % 2 == 0)
    with pytest.raises(FilterError, match=f"nested more than {MAX_DEPTH} levels deep"):
        compile_sql("(" + deepest + ")")
    longest = "p = 1" + " " * (MAX_EXPRESSION_LENGTH - 5)
    assert compile_sql(longest)(MessageView(user={"p": 1})) is True
    with pytest.raises(FilterError, match="longer than 1,024 characters"):
        compile_sql(longest + " ")


def test_the_longest_and_chain_allowed_evaluates_correctly_for_every_send(tmp_path: Path) -> None:
    terms = 0
    while len(_and_chain(terms + 1)) <= MAX_EXPRESSION_LENGTH:
        terms += 1
    chain = _and_chain(terms)
    alternatives = " OR ".join(f"q = {i}" for i in range(200))[:MAX_EXPRESSION_LENGTH].rsplit(" OR ", 1)[0]
    topics = {"t": {"Subscriptions": [{"Name": "all", "Rules": [_sql("chain", chain)]},
                                      {"Name": "any", "Rules": [_sql("alternatives", alternatives)]}]}}
    everything = {f"p{i}": i for i in range(terms)}
    with LocalBus(port=0, config_path=None, topics=topics) as bus, client(bus) as sb, sender(sb, "t") as s:
        s.send_messages([_message("all-and-q7", {**everything, "q": 7}), _message("all-but-one", {
            **everything, f"p{terms - 1}": -1}), _message("q-only", {"q": 60})])
        assert _bodies(sb, "t", "all") == ["all-and-q7"]
        assert _bodies(sb, "t", "any") == ["all-and-q7", "q-only"]


def _message(body: str, properties: dict[str, Any]) -> Any:
    from azure.servicebus import ServiceBusMessage
    return ServiceBusMessage(body, application_properties=properties)  # type: ignore[arg-type]


def _bodies(sb: Any, topic: str, subscription: str) -> list[str]:
    with sb.get_subscription_receiver(topic, subscription) as r:
        got = r.receive_messages(max_message_count=20, max_wait_time=1)
        for m in got:
            r.complete_message(m)
    return sorted(str(m) for m in got)


def test_topic_filter_quotas_are_service_bus_s(tmp_path: Path) -> None:
    sql_rules = [_sql(f"r{i}", f"n = {i}") for i in range(2_001)]
    topics = {"t": {"Subscriptions": [{"Name": f"s{i}", "Rules": sql_rules[i * 100:(i + 1) * 100]}
                                      for i in range(21)]}}
    with pytest.raises(ConfigError, match=re.escape("topic 't' has 2,001 SQL filters; Service Bus allows 2,000")):
        LocalBus(port=0, config_path=None, topics=topics)


# --- evaluation never stops the broker's loop ------------------------------------------------------------------

ACCEPTED = 0x24
SLOW_PATTERN = "%" + "a_" * 49 + "b%"  # 100 characters: one 98-character piece with 49 wildcards
LONG_VALUE = "a" * 30_000  # under Service Bus's 32 KB per property


def test_expensive_routing_runs_off_the_loop_and_keeps_the_topic_s_order(
        caplog: pytest.LogCaptureFixture) -> None:
    topics = {"t": {"Subscriptions": [{"Name": "all"}, {"Name": "tail-b", "Rules": [_sql("b", "p LIKE '%b'")]},
                                      {"Name": "slow", "Rules": [_sql("slow", f"p LIKE '{SLOW_PATTERN}'")]}]}}
    expensive = bytes(Message(body=b"expensive", properties={"p": LONG_VALUE + "b"}, inferred=True).encode())
    cheap = bytes(Message(body=b"cheap", properties={"p": "xb"}, inferred=True).encode())
    with caplog.at_level(logging.DEBUG, logger="localbus.broker"), \
            LocalBus(port=0, config_path=None, topics=topics) as bus:
        raw = RawConnection(bus.port)
        try:
            raw.handshake()
            raw.attach(0, "cbs", SENDER, "$cbs")
            uri = f"sb://localhost:{bus.port}"
            raw.put_token(0, uri, sas_token(uri, bus.key))
            raw.attach(1, "to-topic", SENDER, "t")
            raw.send(transfer_frame(1, 1, expensive) + transfer_frame(1, 2, cheap))  # the cheap one right behind
            outcomes: dict[int, int] = {}
            while len(outcomes) < 2:
                d = raw.expect(DISPOSITION)  # (role, first, last, settled, state): proton may cover both in one
                for delivery_id in range(int(d.fields[1]), int(d.fields[2] or d.fields[1]) + 1):
                    outcomes[delivery_id] = int(d.fields[4].descriptor)
        finally:
            raw.close()
        assert outcomes == {0: ACCEPTED, 1: ACCEPTED, 2: ACCEPTED} or outcomes == {1: ACCEPTED, 2: ACCEPTED}
        with client(bus) as sb:
            with sb.get_subscription_receiver("t", "all") as r:
                peeked = r.peek_messages(max_message_count=10)
            assert [(m.sequence_number, str(m)) for m in peeked] == [(1, "expensive"), (2, "cheap")]
            assert _bodies(sb, "t", "tail-b") == ["cheap", "expensive"]
            assert _bodies(sb, "t", "slow") == ["expensive"]
    assert any("on the worker" in r.getMessage() for r in caplog.records)


def test_a_topic_whose_filters_take_seconds_never_stops_the_loop(localbus_factory: Any) -> None:
    # 2,000 SQL filters (Service Bus's most per topic), each a 100-character LIKE against a 30,000-character
    # property: seconds of work for one message. Everyone else must be served meanwhile.
    subscriptions = [{"Name": f"s{i}", "Rules": [_sql(f"r{i}", f"p LIKE '{SLOW_PATTERN}' AND n = {i}")]}
                     for i in range(2_000)]
    bus = localbus_factory({"plain": {}}, config_path=None, topics={"heavy": {"Subscriptions": subscriptions}})
    outcome: list[BaseException | None] = []

    def send_heavy() -> None:
        try:
            with client(bus, retry_total=0) as sb, sender(sb, "heavy") as s:
                s.send_messages(_message("heavy", {"p": LONG_VALUE, "n": -1}), timeout=120)
            outcome.append(None)
        except BaseException as exc:  # the bus is stopped under it at the end
            outcome.append(exc)
    heavy = threading.Thread(target=send_heavy)
    heavy.start()
    bus.wait_for(lambda b: b.routing_pending("heavy") == 1, timeout=30)  # bus.wait_for runs on the loop itself
    with client(bus) as sb:
        with sender(sb, "plain") as s:
            s.send_messages(_message("polite", {}))
        with sb.get_queue_receiver("plain") as r:
            [polite] = r.receive_messages(max_wait_time=10)
            r.complete_message(polite)
    assert str(polite) == "polite"
    assert bus.call(lambda b: b.routing_pending("heavy")) == 1  # the evaluation was under way the whole time
    bus.stop()  # the evaluation stops at its next rule; the send was never acknowledged, so nothing is lost
    heavy.join(60)
    assert outcome and outcome[0] is not None

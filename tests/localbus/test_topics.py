"""Topics and subscriptions from Config.json: fan-out by correlation, true/false and SQL filters, each
subscription its own queue with its own dead-letter queue and settings; unsupported rules refused at start-up."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusError

from localbus import LocalBus
from localbus.cli import main as cli_main
from localbus.config import ConfigError
from localbus.sqlfilter import FilterError, MessageView, compile_correlation, compile_sql
from localbus.topics import load_topics
from tests.fixtures.localbus import LocalBusFactory

from .sdk import client, sender


def _sql(name: str, expression: str) -> dict[str, Any]:
    return {"Name": name, "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": expression}}}


TOPICS: dict[str, Any] = {"events": {"Properties": {"DefaultMessageTimeToLive": "PT1H"}, "Subscriptions": [
    {"Name": "everything"},
    {"Name": "eu", "Properties": {"MaxDeliveryCount": 1, "LockDuration": "PT30S"},
     "Rules": [{"Name": "eu-only", "Properties": {
         "FilterType": "Correlation", "CorrelationFilter": {"Label": "order", "Properties": {"region": "eu"}}}}]},
    {"Name": "urgent", "Rules": [_sql("urgent", "priority >= 5 OR sys.CorrelationId IN ('vip', 'boss')")]},
    {"Name": "nothing", "Rules": [_sql("false", "1=0")]},
    {"Name": "unset", "Rules": [_sql("no-region", "region IS NULL AND NOT EXISTS(priority)")]},
]}}


@pytest.fixture
def bus(localbus_factory: LocalBusFactory) -> LocalBus:
    return localbus_factory({}, config_path=None, topics=TOPICS)


def _drain(sb: Any, topic: str, subscription: str, **kwargs: Any) -> list[str]:
    with sb.get_subscription_receiver(topic, subscription, **kwargs) as r:
        got = r.receive_messages(max_message_count=20, max_wait_time=1)
        for m in got:
            r.complete_message(m)
    return sorted(str(m) for m in got)


def test_python_sdk_topic_fan_out_by_filters(bus: LocalBus) -> None:
    messages = [
        ServiceBusMessage("eu-order", subject="order", application_properties={"region": "eu"}),
        ServiceBusMessage("us-order", subject="order", application_properties={"region": "us", "priority": 9}),
        ServiceBusMessage("eu-note", application_properties={"region": "eu"}),
        ServiceBusMessage("vip", correlation_id="vip"),
    ]
    with client(bus) as sb:
        with sb.get_topic_sender("events") as s:
            s.send_messages(messages)
        assert _drain(sb, "events", "everything") == ["eu-note", "eu-order", "us-order", "vip"]
        assert _drain(sb, "events", "eu") == ["eu-order"]
        assert _drain(sb, "events", "urgent") == ["us-order", "vip"]
        assert _drain(sb, "events", "nothing") == []
        assert _drain(sb, "events", "unset") == ["vip"]


def test_each_subscription_has_its_own_settings_and_dead_letter_queue(bus: LocalBus) -> None:
    with client(bus) as sb:
        with sb.get_topic_sender("events") as s:
            s.send_messages(ServiceBusMessage("x", subject="order", application_properties={"region": "eu"}))
        with sb.get_subscription_receiver("events", "eu") as r:
            [m] = r.receive_messages(max_wait_time=5)
            r.abandon_message(m)  # MaxDeliveryCount 1 on this subscription only
        with sb.get_subscription_receiver("events", "eu", sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r:
            [dead] = r.receive_messages(max_wait_time=5)
            r.complete_message(dead)
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
        with sb.get_subscription_receiver("events", "everything") as r:
            [m] = r.receive_messages(max_wait_time=5)
            r.abandon_message(m)  # default MaxDeliveryCount: still there
        assert bus.counts("events/Subscriptions/everything")["active"] == 1
        assert bus.counts("events/Subscriptions/everything/$DeadLetterQueue")["total"] == 0


def test_topic_schedule_cancel_and_peek_on_a_subscription(bus: LocalBus) -> None:
    with client(bus) as sb:
        with sb.get_topic_sender("events") as s:
            later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            seq_keep, seq_cancel = s.schedule_messages([ServiceBusMessage("keep"), ServiceBusMessage("cancel")], later)
            s.cancel_scheduled_messages(seq_cancel)
        with sb.get_subscription_receiver("events", "everything") as r:
            peeked = r.peek_messages(max_message_count=5, sequence_number=1)
    assert [(m.sequence_number, str(m)) for m in peeked] == [(seq_keep, "keep")]


def test_receiving_from_a_topic_or_sending_to_a_subscription_is_refused(bus: LocalBus) -> None:
    with client(bus, retry_total=0) as sb:
        with pytest.raises(ServiceBusError) as caught, sender(sb, "events/Subscriptions/eu") as s:
            s.send_messages(ServiceBusMessage("x"))
        assert "sending to a subscription is not allowed" in str(caught.value)
        with pytest.raises(ServiceBusError) as caught, sb.get_queue_receiver("events") as r:
            r.receive_messages(max_wait_time=1)
        assert "Cannot receive from topic" in str(caught.value)


def test_topics_are_read_from_config_json_and_bad_rules_are_one_line_cli_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = {"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [], "Topics": [
        {"Name": "t", "Subscriptions": [{"Name": "s", "Rules": [_sql("ok", "sys.To = 'x'")]}]}]}]}}
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(document))
    assert list(load_topics(path)["t"].subscriptions) == ["s"]
    document["UserConfig"]["Namespaces"][0]["Topics"][0]["Subscriptions"][0]["Rules"] = [  # type: ignore[index]
        {"Name": "act", "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "1=1"},
                                       "Action": {"SqlExpression": "SET sys.Label = 'x'"}}}]
    path.write_text(json.dumps(document))
    assert cli_main(["--config", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unsupported rule 'act'" in err and "rule actions are not supported" in err and "\n" not in err


# --- the SQL filter language ---------------------------------------------------------------------------------

VIEW = MessageView(system={"subject": "order", "message_id": "m-1", "to": "x"},
                   user={"n": 5, "price": 2.5, "name": "Ada Lovelace", "flag": True, "empty": None})


@pytest.mark.parametrize(("expression", "expected"), [
    ("n = 5", True), ("n <> 5", False), ("n != 4", True), ("n > 4 AND n <= 5", True), ("price < 3", True),
    ("n = 5 AND missing = 1", False), ("n = 5 OR missing = 1", True), ("NOT missing = 1", False),
    ("NOT (missing = 1)", False), ("missing IS NULL", True), ("n IS NOT NULL", True), ("empty IS NULL", True),
    ("EXISTS(n)", True), ("EXISTS(missing)", False), ("NOT EXISTS(missing)", True),
    ("n IN (1, 5, 9)", True), ("n NOT IN (1, 9)", True), ("missing IN (1)", False), ("missing NOT IN (1)", False),
    ("name LIKE 'Ada%'", True), ("name LIKE '_da Love%'", True), ("name NOT LIKE '%x%'", True),
    ("name LIKE 'A!%%' ESCAPE '!'", False),
    ("sys.Label = 'order'", True), ("sys.label = 'order'", True), ("SYS.MessageId = 'm-1'", True),
    ("sys.CorrelationId IS NULL", True), ("user.n = 5", True), ("[n] = 5", True), ("flag = TRUE", True),
    ("1=1", True), ("1=0", False), ("TRUE", True), ("FALSE", False), ("n = '5'", False), ("n = -5", False),
    ("(n = 5 OR n = 6) AND sys.To = 'x'", True), ("n = 5 and name like 'A%'", True),
])
def test_sql_filter_semantics(expression: str, expected: bool) -> None:
    assert compile_sql(expression)(VIEW) is expected


@pytest.mark.parametrize(("expression", "reason"), [
    ("price * 2 > 1", "arithmetic"), ("newid() = 1", "functions"), ("sys.Nonsense = 1", "sys.Nonsense"),
    ("n = ", "expected a property or a constant"), ("n = 5 extra", "unexpected"), ("", "empty"),
    ("name LIKE n", "string constant"), ("other.n = 1", "scope"),
])
def test_sql_filter_refuses_what_it_cannot_run(expression: str, reason: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_sql(expression)
    assert reason in str(caught.value)


def test_correlation_filter_needs_every_field_equal() -> None:
    matches = compile_correlation({"Label": "order", "Properties": {"n": 5}})
    assert matches(VIEW)
    assert not compile_correlation({"Label": "order", "Properties": {"n": 6}})(VIEW)
    assert not compile_correlation({"CorrelationId": "c"})(VIEW)
    with pytest.raises(FilterError):
        compile_correlation({"Colour": "red"})


def test_unknown_filter_type_is_a_config_error() -> None:
    topics = {"t": {"Subscriptions": [{"Name": "s", "Rules": [{"Name": "r", "Properties": {"FilterType": "Magic"}}]}]}}
    with pytest.raises(ConfigError, match="unsupported rule 'r'"):
        LocalBus(port=0, config_path=None, topics=topics)

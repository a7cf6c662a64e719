"""`sbworker dev` (what `make run` runs): the whole embedded stack, driven with the plain azure-servicebus SDK."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from sbworker.core import clients
from sbworker.core.config import parse_dts
from tests.support.ports import free_port
from tests.support.processes import Process, sbworker, sbworker_env
from tests.support.wait import until


def test_dev_brings_up_the_whole_system_and_keeps_messages(tmp_path: Path) -> None:
    sb_port, dts_port, board_port = free_port(), free_port(), free_port()
    args = ["dev", "--servicebus-port", str(sb_port), "--dts-port", str(dts_port), "--data", str(tmp_path),
            "--dashboard-port", str(board_port)]
    env = sbworker_env("ignored", "ignored")
    del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
    with Process(args, env).start() as dev:
        dev.wait_for_output("listening on queue", timeout=60)
        printed = re.search(r"Service Bus \(localbus\):\s+(\S+)", dev.output)
        assert printed is not None
        connection = printed.group(1)
        assert connection == (f"Endpoint=sb://localhost:{sb_port};SharedAccessKeyName=RootManageSharedAccessKey;"
                              "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
        assert "sbworker publish start approval_workflow" in dev.output
        assert f"Dashboard:               http://localhost:{board_port}" in dev.output, dev.output
        with urllib.request.urlopen(f"http://127.0.0.1:{board_port}/", timeout=10) as page:
            assert page.status == 200
        # make run first shows the five workflows going the real way: queue → listener → DTS → worker.
        dev.wait_for_output("Ready for your own messages", timeout=60)
        out = dev.output
        assert re.search(r'hello_cities\s+COMPLETED\s+"Hello Tokyo!, Hello Seattle!, Hello London!"', out), out
        assert re.search(r'fan_out_fan_in\s+COMPLETED\s+\["Hello Tokyo!", "Hello Seattle!", "Hello London!", '
                         r'"Hello Paris!", "Hello Berlin!"\]', out), out
        assert re.search(r'approval_workflow\s+COMPLETED\s+"Approved"', out), out
        assert re.search(r'workflow_with_retry\s+COMPLETED\s+"Service succeeded after 2 attempt\(s\)"', out), out
        assert re.search(r'invoice_payment\s+COMPLETED\s+\{"status": "Paid", "invoice": "DEMO-1", "paid_cents": 4500, '
                         r'"payments": \["demo-payment-1"\], "receipt": "R-DEMO-1"\}', out), out
        # A plain SDK client and the printed string are all a newcomer needs.
        with ServiceBusClient.from_connection_string(connection) as sb, \
                sb.get_queue_sender("workflow-requests") as sender:
            sender.send_messages(ServiceBusMessage('{"orchestration": "hello_cities"}', subject="start",
                                                   message_id="dev-smoke"))
        with clients.dts_client(parse_dts(f"Endpoint=http://localhost:{dts_port};Authentication=None")) as dts:
            def output() -> str | None:
                state = dts.get_orchestration_state("dev-smoke")
                return state.serialized_output if state is not None else None

            assert until(output, what="dev-smoke's output", timeout=30, interval=0.1) == \
                '"Hello Tokyo!, Hello Seattle!, Hello London!"'

        # The dashboard draws the instance's trace from the spans the process kept: message → DTS → worker. The
        # instance page links the trace once the listener's span reached the store (spans are exported in batches).
        board = f"http://localhost:{board_port}"

        def trace_link() -> str | None:
            link = re.search(r'href="(/trace\?id=[0-9a-f]{32})"', _page(f"{board}/instance?id=dev-smoke"))
            return link.group(1) if link else None

        # The spans end in their own order (the listener's span only after the message is settled, which can be
        # after the activity ran) and so may reach the store in different batches: wait for all of them.
        spans = ("process workflow-requests", "create_orchestration:hello_cities", "orchestration:hello_cities",
                 "activity:say_hello")

        def whole_waterfall() -> str | None:
            waterfall = _page(f"{board}{trace}", ok_only=False)
            return waterfall if all(span in waterfall for span in spans) else None

        trace = until(trace_link, what="the instance page linking its trace", timeout=15, interval=0.2)
        waterfall = until(whole_waterfall, what="the trace's four spans", timeout=20, interval=0.2)
        for span in spans:
            assert span in waterfall, span
        assert dev.terminate(signal.SIGINT) == 0
        # A clean Ctrl-C prints nothing alarming (the worker's stream ends CANCELLED: that is our own stop).
        stopping = dev.output.split("SIGINT received", 1)[1]
        assert not any(word in stopping for word in ("WARNING", "ERROR", "Traceback", "CANCELLED")), stopping
    assert (tmp_path / "servicebus.sqlite3").exists()


def test_dev_topic_runs_the_demo_through_the_topic_subscription(tmp_path: Path) -> None:
    """`sbworker dev --topic`: the shipped Config.json's topic, the worker's subscription and its retry queue."""
    sb_port, dts_port, board_port = free_port(), free_port(), free_port()
    env = sbworker_env("ignored", "ignored")
    del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
    args = ["dev", "--topic", "--memory", "--servicebus-port", str(sb_port), "--dts-port", str(dts_port),
            "--dashboard-port", str(board_port)]
    with Process(args, env).start() as dev:
        dev.wait_for_output("Ready for your own messages", timeout=90)
        # Each entity's listener connects on its own; the demo's messages all come through the subscription, so
        # the retry queue's listener may say it listens a moment after the demo is done.
        dev.wait_for_output("listening on queue 'workflow-events-sbworker-retry'", timeout=30)
        out = dev.output
        assert "listening on subscription 'sbworker' of topic 'workflow-events'" in out
        assert "export SERVICEBUS_TOPIC=workflow-events SERVICEBUS_SUBSCRIPTION=sbworker" in out
        for name in ("hello_cities", "fan_out_fan_in", "workflow_with_retry", "invoice_payment"):
            assert re.search(rf"{name}\s+COMPLETED", out), out
        assert re.search(r'approval_workflow\s+COMPLETED\s+"Approved"', out), out
        connection = f"Endpoint=sb://localhost:{sb_port};SharedAccessKeyName=RootManageSharedAccessKey;" \
                     "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
        # The demo published to the topic: the other subscription got the five starts, the approval and the payment.
        with ServiceBusClient.from_connection_string(connection) as sb, \
                sb.get_subscription_receiver("workflow-events", "audit") as audit:
            subjects = [str(m.subject) for m in audit.peek_messages(max_message_count=50, sequence_number=1)]
        assert sorted(subjects) == ["approval", "event", "start", "start", "start", "start", "start"]
        page = _page(f"http://localhost:{board_port}/queue")
        assert "Subscription workflow-events/Subscriptions/sbworker" in page and "Retry queue" in page
        assert dev.terminate(signal.SIGINT) == 0


def test_dev_sessions_runs_the_demo_in_sessions_and_prints_what_the_cli_needs(tmp_path: Path) -> None:
    """`sbworker dev --sessions`: the shipped Config.json's session-enabled queue, each demo message in its
    instance's session (the queue refuses a message without one)."""
    sb_port, dts_port = free_port(), free_port()
    env = sbworker_env("ignored", "ignored")
    del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
    args = ["dev", "--sessions", "--memory", "--servicebus-port", str(sb_port), "--dts-port", str(dts_port),
            "--dashboard-port", "0"]
    with Process(args, env).start() as dev:
        dev.wait_for_output("Ready for your own messages", timeout=90)
        out = dev.output
        assert "listening on queue 'workflow-requests-sessions' (sessions:" in out
        assert "export SERVICEBUS_SESSIONS=true" in out
        for name in ("hello_cities", "fan_out_fan_in", "workflow_with_retry", "invoice_payment"):
            assert re.search(rf"{name}\s+COMPLETED", out), out
        assert re.search(r'approval_workflow\s+COMPLETED\s+"Approved"', out), out
        # The approval and the payment went in too: the session-enabled queue refuses a message without a session.
        assert re.search(r"accepted session demo-approval_workflow-\w+ of queue 'workflow-requests-sessions'", out)
        assert dev.terminate(signal.SIGINT) == 0
    with Process(["dev", "--sessions", "--memory", "--dashboard-port", "0"],
                 {**env, "SERVICEBUS_SESSIONS": "false"}).start() as refused:
        assert refused.proc is not None and refused.proc.wait(60) == 2
        assert "configuration error: SERVICEBUS_SESSIONS: is false, but --sessions asks for session mode" in \
            refused.output


def test_dev_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = sbworker_env("x", "y")
        del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
        with Process(["dev", "--servicebus-port", str(port), "--data", str(tmp_path), "--dashboard-port", "0"],
                     env).start() as dev:
            assert dev.proc.wait(60) == 2
            assert f"configuration error: --servicebus-port: port {port} is in use" in dev.output
            assert "Traceback" not in dev.output


def test_dev_with_a_missing_or_broken_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """It used to end in a traceback with exit code 1: localbus's own ConfigError escaped the CLI."""
    broken = tmp_path / "Config.json"
    broken.write_text("{not json", encoding="utf-8")
    env = sbworker_env("x", "y")
    del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
    for path in (tmp_path / "nonexistent.json", broken):
        done = sbworker("dev", "--servicebus-port", str(free_port()), "--dts-port", str(free_port()), "--memory",
                        "--dashboard-port", "0",
                        "--config", str(path), env=env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("configuration error: --config:"), done.stderr
        assert str(path) in lines[0]


def _page(url: str, *, ok_only: bool = True) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        if ok_only:
            raise
        return str(error.read().decode())


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on `port`, read from /proc (IPv4 and IPv6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address if len(address) == width else "?")
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net prints them
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def _dev_env() -> dict[str, str]:
    env = sbworker_env("x", "y")
    del env["SERVICEBUS_CONNECTION_STRING"], env["DTS_CONNECTION_STRING"]
    return env


def test_dev_listens_on_loopback_only(tmp_path: Path) -> None:
    """The DTS backend (no authentication) and the health port used to listen on every interface."""
    sb_port, dts_port, health_port = free_port(), free_port(), free_port()
    env = {**_dev_env(), "HEALTH_PORT": str(health_port)}
    board_port = free_port()
    with Process(["dev", "--servicebus-port", str(sb_port), "--dts-port", str(dts_port), "--data", str(tmp_path),
                  "--no-demo", "--dashboard-port", str(board_port)], env).start() as dev:
        dev.wait_for_output("listening on queue", timeout=60)
        for port in (sb_port, dts_port, health_port, board_port):
            addresses = _listening_addresses(port)
            assert addresses and addresses <= LOOPBACK, (port, addresses)
        assert dev.terminate(signal.SIGINT) == 0


def test_dev_elsewhere_than_loopback_needs_allow_remote_and_a_key_of_your_own(tmp_path: Path) -> None:
    ports = ["--servicebus-port", str(free_port()), "--dts-port", str(free_port()), "--memory", "--no-demo",
             "--dashboard-port", "0"]
    refused = sbworker("dev", "--host", "0.0.0.0", *ports, env=_dev_env())
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    well_known = sbworker("dev", "--host", "0.0.0.0", "--allow-remote", *ports, env=_dev_env())
    assert well_known.returncode == 2 and "SAS_KEY_VALUE" in well_known.stderr, well_known.stderr
    assert "Traceback" not in refused.stderr + well_known.stderr


def test_dev_keeps_its_dashboard_on_loopback_when_the_rest_listens_elsewhere(tmp_path: Path) -> None:
    """The dashboard to share is `sbworker dashboard`, with authentication; dev's own has none."""
    board_port = free_port()
    with Process(["dev", "--host", "0.0.0.0", "--allow-remote", "--key", "a-key-of-our-own-for-this-test",
                  "--servicebus-port", str(free_port()), "--dts-port", str(free_port()), "--memory", "--no-demo",
                  "--dashboard-port", str(board_port)], {**_dev_env(), "HEALTH_PORT": "0"}).start() as dev:
        dev.wait_for_output("listening on queue", timeout=60)
        addresses = _listening_addresses(board_port)
        assert addresses and addresses <= LOOPBACK, addresses
        assert dev.terminate(signal.SIGINT) == 0


def test_dev_with_data_that_is_not_ours_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "dts.sqlite3").write_bytes(b"this is not a database" * 100)
    done = sbworker("dev", "--servicebus-port", str(free_port()), "--dts-port", str(free_port()),
                    "--data", str(tmp_path), "--no-demo", "--dashboard-port", "0", env=_dev_env())
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: --data:"), done.stderr
    assert (tmp_path / "dts.sqlite3").read_bytes() == b"this is not a database" * 100


def test_dev_with_data_it_cannot_write_or_create_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The message store that cannot be opened and the data directory that cannot be created were tracebacks."""
    (tmp_path / "store" / "servicebus.sqlite3").mkdir(parents=True)  # a directory where the message store goes
    (tmp_path / "a-file").write_text("")
    for data, problem in ((tmp_path / "store", "cannot write the message store"),
                          (tmp_path / "a-file" / "sub", "cannot create the data directory")):
        done = sbworker("dev", "--servicebus-port", str(free_port()), "--dts-port", str(free_port()),
                        "--data", str(data), "--no-demo", "--dashboard-port", "0", env=_dev_env())
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("configuration error: --data:") and problem in last, done.stderr

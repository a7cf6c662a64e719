"""``sbworker localbus`` / ``python -m localbus`` as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusAuthenticationError

from localbus.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
QUEUE = "workflow-requests"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signal_and_exits_zero(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "localbus", "--port", "0"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("Endpoint=sb://localhost:") and line.endswith(
            ";SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
        port = int(line.split("localhost:")[1].split(";")[0])
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "workflow-requests" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_help_names_the_command() -> None:
    text = build_parser().format_help()
    assert text.startswith("usage: sbworker localbus [-h] [--host HOST] [--port PORT] [--config PATH]")
    assert "--data PATH" in text


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "localbus", "--port", "0", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "0.0.0.0"], "0.0.0.0 is not a loopback address; pass --allow-remote"),
    (["--host", "0.0.0.0", "--allow-remote"], "with the well-known emulator key SAS_KEY_VALUE"),
    (["--host", "0.0.0.0", "--allow-remote", "--key", "SAS_KEY_VALUE"], "with the well-known emulator key"),
])
def test_a_non_loopback_bind_needs_allow_remote_and_a_key_of_ones_own(args: list[str], message: str) -> None:
    proc = _run(*args)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sbworker localbus: error: ") and message in err


def test_remote_bind_with_its_own_key_warns_and_only_that_key_works() -> None:
    proc = _run("--host", "0.0.0.0", "--allow-remote", "--key", "my-own-secret", "--key-name", "Sender")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        conn = proc.stdout.readline().strip()
        assert ";SharedAccessKeyName=Sender;SharedAccessKey=my-own-secret;" in conn
        with ServiceBusClient.from_connection_string(conn) as sb, sb.get_queue_sender(QUEUE) as s:
            s.send_messages(ServiceBusMessage("with my key"))
        wrong = conn.replace("my-own-secret", "SAS_KEY_VALUE")
        with ServiceBusClient.from_connection_string(wrong, retry_total=0) as sb, \
                pytest.raises(ServiceBusAuthenticationError), sb.get_queue_sender(QUEUE) as s:
            s.send_messages(ServiceBusMessage("with the emulator key"))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert "warning: listening on 0.0.0.0" in err and proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_help_lists_the_security_options() -> None:
    text = build_parser().format_help()
    for option in ("--key KEY", "--key-name NAME", "--accept-jwt", "--allow-remote"):
        assert option in text
    assert build_parser().parse_args([]).host == "127.0.0.1"

"""``sbworker localbus`` / ``python -m localbus`` as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from localbus.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


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

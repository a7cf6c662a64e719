"""The installed package works outside the repository: `sbworker dev` finds its queues in the wheel itself.

The default Config.json used to be a path into the checkout's infra/, which an installed package does not have.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_an_installed_sbworker_dev_runs_outside_the_repository(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("sbworker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sbworker/Config.json" in names
    # The contract's schema files: the listener validates with them, and the AsyncAPI document is built from them.
    schemas = {"sbworker/core/schemas/event.schema.json", "orchestrations/schemas/PaymentReceived.schema.json"}
    assert schemas <= set(names)
    assert not [n for n in names if n.startswith(("bench/", "tests/"))], "bench/ and tests/ are not shipped"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICEBUS_", "DTS_", "AZURE_"))}
    # The installed copy comes first; the venv still provides the dependencies.
    env.update(PYTHONPATH=str(site), HEALTH_PORT="0", PYTHONUNBUFFERED="1")
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sbworker", "dev", "--memory", "--no-demo",
                                 "--dashboard-port", "0", "--servicebus-port", str(free_port()),
                                 "--dts-port", str(free_port())],
                                cwd=elsewhere, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert proc.poll() is None, log.read_text()
            return "listening on queue" in log.read_text()

        until(listening, what="the service listening", timeout=60, interval=0.2)
        text = log.read_text()
        assert "listening on queue 'workflow-requests'" in text, text
        assert str(REPO) not in text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    imported = subprocess.run([sys.executable, "-c", "import sbworker; print(sbworker.LOCAL_CONFIG)"], cwd=elsewhere,
                              env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert imported.startswith(str(site)), imported
    described = subprocess.run([sys.executable, "-m", "sbworker", "contract", "--asyncapi"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert described == (REPO / "docs" / "asyncapi.yaml").read_text(encoding="utf-8")

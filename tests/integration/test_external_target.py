"""`pytest --servicebus ... --dts ...` really sends the tests' traffic to the endpoints it was given.

A broker and a DTS backend started here stand for the docker-compose emulators; a child pytest is pointed at them,
and what it did is then read back from them, not from its own report alone.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusSubQueue
from durabletask.client import OrchestrationQuery

from localbus import LocalBus
from sbworker.core import clients
from tests.fixtures.dts import start_backend
from tests.fixtures.localbus import REPO_CONFIG
from tests.integration.harness import QUEUE
from tests.support.processes import REPO

pytestmark = pytest.mark.slow


def test_integration_tests_run_against_the_given_service_bus_and_dts() -> None:
    backend = start_backend()
    try:
        with LocalBus(port=0, config_path=REPO_CONFIG) as bus:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/integration/test_listener.py", "tests/integration/test_workflows.py",
                 "-k", "start_is_completed or invalid_message or approval_is_raised or hello_cities",
                 "--servicebus", bus.connection_string, "--dts", backend.connection_string],
                cwd=REPO, capture_output=True, text=True, timeout=600,
            )
            summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
            passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
            assert passed >= 12, summary
            with ServiceBusClient.from_connection_string(bus.connection_string) as sb, \
                    sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
                dead = dlq.peek_messages(max_message_count=100, sequence_number=1)
            assert len(dead) >= 9, "the invalid-message tests dead-lettered on the given broker"
        with clients.dts_client(backend.settings) as dts:
            names = {s.name for s in dts.get_all_orchestration_states(OrchestrationQuery())}
        assert {"hello_cities", "approval_workflow"} <= names, names
    finally:
        backend.stop()

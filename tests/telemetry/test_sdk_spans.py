"""The durabletask client builds its spans only when a tracer provider would record them (telemetry.spans_recorded).

This session has a global provider (tests/fixtures/isolation.py), so the bare case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

from listener.service import Service
from sbworker.core import config
from sbworker.observability.telemetry import spans_recorded

SETTINGS = {"SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://localhost;SharedAccessKeyName=k;SharedAccessKey=unused;"
                                            "UseDevelopmentEmulator=true;",
            "SERVICEBUS_QUEUE": "q", "DTS_CONNECTION_STRING": "Endpoint=http://localhost:1;Authentication=None"}

# A service built without a provider, then one built after a provider is installed: what each DTS client emits.
PROBE = f"""
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from listener.service import Service
from sbworker.core import config
from sbworker.observability.telemetry import spans_recorded

settings = config.load({SETTINGS!r})
seen = [spans_recorded(), Service(settings, with_worker=False).dispatcher.client.emit_trace_spans]
trace.set_tracer_provider(TracerProvider())
seen += [spans_recorded(), Service(settings, with_worker=False).dispatcher.client.emit_trace_spans]
print(json.dumps(seen))
"""


def test_without_a_tracer_provider_the_dts_client_builds_no_spans_and_with_one_it_does() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, False, True, True]


def test_this_session_records_spans_so_its_services_clients_emit_them() -> None:
    assert spans_recorded()
    assert Service(config.load(SETTINGS), with_worker=False).dispatcher.client.emit_trace_spans

"""The any-order guard (tests/fixtures/isolation.py) run on a small suite of its own, in a pytest subprocess that
inherits this run's environment, PYTEST_CURRENT_TEST included, as tests/integration/test_external_target does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SUITE = '''
import os

def test_leaves_the_environment_alone():
    os.environ["GUARD_PROBE_KEPT"] = "1"
    del os.environ["GUARD_PROBE_KEPT"]

def test_leaks_a_variable():
    os.environ["GUARD_PROBE_LEAKED"] = "1"
'''


def test_the_guard_names_a_leaked_variable_and_ignores_pytests_own(tmp_path: Path) -> None:
    suite = tmp_path / "test_probe.py"
    suite.write_text(SUITE)
    assert "PYTEST_CURRENT_TEST" in os.environ  # what the child inherits
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-p", "tests.fixtures.isolation", str(suite)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert "2 passed, 1 error" in out, out
    assert "environment: added GUARD_PROBE_LEAKED" in out, out
    assert "PYTEST_CURRENT_TEST" not in out, out

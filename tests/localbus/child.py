"""localbus in a child process, for tests that kill it (-9) or run it with an LD_PRELOAD shim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def broker_process(port: int, config: Path, data: Path, env: dict[str, str] | None = None
                   ) -> subprocess.Popen[str]:
    """``python -m localbus`` in a child process; returns once it printed its connection string."""
    proc = subprocess.Popen([sys.executable, "-m", "localbus", "--port", str(port), "--config", str(config),
                             "--data", str(data)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("Endpoint=sb://localhost:")
    return proc

"""The determinism rules are enforced on the real orchestrations package, and the check is shown to bite."""

from __future__ import annotations

from pathlib import Path

import orchestrations
from tests.determinism import check_package, check_source

PACKAGE = Path(orchestrations.__file__).parent

BAD = '''\
import datetime as dt
import os
import random
import time
import uuid
from datetime import datetime
from time import sleep as nap
from urllib.request import urlopen

import requests


def bad_orchestrator(ctx, _):
    a = datetime.now()                 # 14
    b = dt.datetime.utcnow()           # 15
    c = dt.date.today()                # 16
    time.sleep(1)                      # 17
    nap(1)                             # 18
    d = time.monotonic()               # 19
    e = uuid.uuid4()                   # 20
    f = random.randint(1, 6)           # 21
    g = open("/etc/hosts").read()      # 22
    h = requests.get("http://x")       # 23
    i = urlopen("http://x")            # 24
    j = os.environ["HOME"]             # 25
    k = os.getenv("HOME")              # 26
    m = time.time()                    # 27
    n = uuid.uuid1()                   # 28
    yield ctx.call_activity("x")
'''


def test_orchestrations_package_is_deterministic() -> None:
    findings = check_package(PACKAGE)
    assert findings == [], "\n".join(map(str, findings))


def test_the_check_finds_every_violation_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad_orchestrator.py"
    bad.write_text(BAD)
    findings = check_source(BAD, bad)
    lines = {f.line for f in findings}
    assert set(range(14, 29)) <= lines, sorted(lines)
    # The imports that bring non-determinism in are reported too.
    assert {3, 8, 10} <= lines
    text = "\n".join(map(str, findings))
    assert f"{bad}:14: datetime.datetime.now is not deterministic" in text
    assert f"{bad}:18: time.sleep" in text
    assert f"{bad}:25: os.environ" in text


def test_check_package_reports_a_bad_module_in_a_package(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("def ok(ctx, _):\n    return ctx.current_utc_datetime\n")
    (tmp_path / "bad.py").write_text("import uuid\n\ndef o(ctx, _):\n    return str(uuid.uuid4())\n")
    findings = check_package(tmp_path)
    assert [(f.path.name, f.line, f.name) for f in findings] == [("bad.py", 4, "uuid.uuid4")]


def test_deterministic_apis_are_allowed(tmp_path: Path) -> None:
    good = (
        "from datetime import timedelta\nimport logging\n"
        "def o(ctx, _):\n"
        "    t = ctx.current_utc_datetime + timedelta(seconds=1)\n"
        "    u = ctx.new_uuid()\n"
        "    logging.getLogger(__name__).info('x')\n"
        "    yield ctx.create_timer(t)\n"
    )
    assert check_source(good, tmp_path / "good.py") == []


def test_a_local_function_named_open_is_not_the_builtin(tmp_path: Path) -> None:
    src = "def open(x):\n    return x\n\ndef o(ctx, _):\n    return open(1)\n"
    assert check_source(src, tmp_path / "m.py") == []

"""Soak (SOAK=1, `make soak`): `sbworker run` (listener + worker) under a steady mixed load for SOAK_MINUTES
(default 30), sampled every 10 s: RSS, open file descriptors, asyncio tasks on its loop (`soakprobe/`), and the
size of both SQLite files. After a warm-up, a least-squares slope above its threshold fails the run.

Thresholds, per hour of running at ~20 messages/s (72,000 messages/h):
- RSS 16 MiB/h: a leak of 1 KiB per message shows as ~70 MiB/h; sampling noise of a few MiB over 25 min stays
  well under 16 (a day at the threshold is +384 MiB, and we would still want to know).
- file descriptors 6/h and tasks 30/h: both should be flat; one leaked per 2,500 (fds) or per 2,400 (tasks)
  messages crosses them.
- localbus SQLite 8 MiB/h: every message is deleted once settled and SQLite reuses the pages, so the file must
  level off; localdts keeps every instance and its history (as DTS does until purged), so its growth is judged
  per instance instead: at most 32 KiB per completed instance.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from localdts import LocalDts
from sbworker.core import clients
from sbworker.core.config import parse_dts
from tests.reliability.common import QUEUE, approval_message, dead_letters, durable_bus, start_message
from tests.support.processes import LISTENING, Process, sbworker_env
from tests.support.wait import until

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
SAMPLE_SECONDS = 10.0
RATE = 20  # messages per second, steady
WARMUP_SHARE = 0.2  # the first fifth is allocation warm-up, not a trend
PROBE_DIR = Path(__file__).resolve().parent / "soakprobe"
MIB = 1024 * 1024
SLOPE_LIMITS = {"rss": 16 * MIB, "fds": 6, "tasks": 30, "bus_sqlite": 8 * MIB}  # per hour
DTS_BYTES_PER_INSTANCE = 32 * 1024


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SLOPE_LIMITS})


def slope_per_hour(t: list[float], y: list[float]) -> float:
    """Least-squares slope of y over t (seconds), per hour."""
    n = len(t)
    mt, my = sum(t) / n, sum(y) / n
    var = sum((a - mt) ** 2 for a in t)
    return 0.0 if var == 0 else sum((a - mt) * (b - my) for a, b in zip(t, y, strict=True)) / var * 3600


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


def _size(path: Path) -> float:
    return float(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")))  # + -wal, -shm


def _tasks(probe: Path) -> float | None:
    lines = probe.read_text().splitlines() if probe.exists() else []
    return float(lines[-1].split()[1]) if lines else None


class SteadyLoad(threading.Thread):
    """RATE messages/s until `stop`: hello_cities starts, approval_workflow starts each followed by its approval
    (some arrive before their start is processed: the re-enqueue path), and one invalid message in ten."""

    def __init__(self, connection_string: str, run: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.connection_string, self.run_id, self.stop = connection_string, run, stop
        self.sent = self.invalid = self.approvals = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with ServiceBusClient.from_connection_string(self.connection_string) as sb, \
                    sb.get_queue_sender(QUEUE) as sender:
                tick = time.monotonic()
                while not self.stop.is_set():
                    sender.send_messages(self._second())
                    tick += 1.0
                    time.sleep(max(0.0, tick - time.monotonic()))
        except BaseException as error:  # reported by the test
            self.error = error

    def _second(self) -> list[ServiceBusMessage]:
        batch: list[ServiceBusMessage] = []
        for _ in range(RATE // 10):
            n = self.sent
            iid = f"{self.run_id}-a{n}"
            batch += [start_message("hello_cities", instance_id=f"{self.run_id}-h{n}"),
                      start_message("hello_cities", instance_id=f"{self.run_id}-h{n}b"),
                      start_message("approval_workflow", input={"timeout_seconds": 3600}, instance_id=iid),
                      approval_message(iid, n % 2 == 0, "soak"),
                      start_message("fan_out_fan_in", input=["Oslo"], instance_id=f"{self.run_id}-f{n}"),
                      start_message("hello_cities", message_id=f"{self.run_id}-m{n}"),
                      start_message("hello_cities", message_id=f"{self.run_id}-m{n}"),  # a publisher retry
                      start_message("workflow_with_retry", input={"fail_times": 0}, instance_id=f"{self.run_id}-r{n}"),
                      approval_message(iid, True, "late"),  # too late: InstanceNotRunning, or a duplicate
                      ServiceBusMessage(b"{not json", subject="start", message_id=f"{self.run_id}-bad{n}")]
            self.sent += 1
            self.invalid += 1
        return batch


@pytest.mark.soak
@pytest.mark.timeout(int(MINUTES * 60 + 600))
def test_soak_steady_mixed_load_leaks_nothing(tmp_path: Path) -> None:
    run = f"soak-{uuid.uuid4().hex[:6]}"
    probe = tmp_path / "tasks.txt"
    dts = LocalDts(port=0, data_path=tmp_path / "dts.sqlite3").start()
    client = clients.dts_client(parse_dts(dts.connection_string))
    samples = Samples()
    try:
        with durable_bus(tmp_path, lock="PT30S") as bus:
            env = sbworker_env(bus.connection_string, dts.connection_string, APPROVAL_NOT_FOUND_WINDOW_SECONDS=60,
                               SOAK_PROBE_FILE=str(probe), SOAK_PROBE_SECONDS=SAMPLE_SECONDS,
                               PYTHONPATH=os.pathsep.join(filter(None, [str(PROBE_DIR),
                                                                        os.environ.get("PYTHONPATH")])))
            with Process(["run"], env, tmp_path / "service.log", ready=LISTENING) as service:
                service.start()
                assert service.proc is not None
                pid = service.proc.pid
                stop = threading.Event()
                load = SteadyLoad(bus.connection_string, run, stop)
                load.start()
                began = time.monotonic()
                try:
                    while time.monotonic() - began < MINUTES * 60:
                        time.sleep(SAMPLE_SECONDS)
                        assert service.alive and load.is_alive(), (load.error, service.output[-3000:])
                        tasks = _tasks(probe)
                        if tasks is None:
                            continue
                        samples.t.append(time.monotonic() - began)
                        for key, value in (("rss", _rss(pid)), ("fds", float(len(os.listdir(f"/proc/{pid}/fd")))),
                                           ("tasks", tasks), ("bus_sqlite", _size(tmp_path / "localbus.sqlite3"))):
                            samples.series[key].append(value)
                finally:
                    stop.set()
                    load.join(10)
                assert load.error is None, load.error
                until(lambda: bus.counts(QUEUE)["total"] == 0, timeout=180, interval=1, what="the queue drained",
                           on_timeout=lambda: f"{bus.counts(QUEUE)}\n{service.output[-3000:]}")
                dead = dead_letters(bus.connection_string)
                bad = [d for d in dead if d.reason == "InvalidJson"]
                assert len(bad) == load.invalid, (len(bad), load.invalid)
                assert {d.reason for d in dead} <= {"InvalidJson", "InstanceNotRunning"}, {d.reason for d in dead}
                assert service.terminate() == 0
            instances = load.sent * 6  # distinct instance ids per step of `_second`
            dts_bytes = _size(dts.data_file) if dts.data_file else 0.0
    finally:
        client.close()
        dts.stop(grace=0)

    keep = [i for i, t in enumerate(samples.t) if t >= WARMUP_SHARE * MINUTES * 60]
    assert len(keep) >= 3, "too few samples after the warm-up"
    t = [samples.t[i] for i in keep]
    report, over = [], []
    for key, limit in SLOPE_LIMITS.items():
        y = [samples.series[key][i] for i in keep]
        slope = slope_per_hour(t, y)
        unit, scale = ("MiB", MIB) if key in ("rss", "bus_sqlite") else ("", 1)
        report.append(f"{key}: {y[0] / scale:.1f}{unit} -> {y[-1] / scale:.1f}{unit}, slope {slope / scale:+.1f}"
                      f"{unit}/h (limit {limit / scale:.0f})")
        if slope > limit:
            over.append(key)
    per_instance = dts_bytes / max(1, instances)
    report.append(f"localdts sqlite: {dts_bytes / MIB:.1f} MiB for {instances} instances, "
                  f"{per_instance / 1024:.1f} KiB each (limit {DTS_BYTES_PER_INSTANCE // 1024})")
    print(f"\nsoak {MINUTES:.0f} min, {load.sent * 10} messages, {len(samples.t)} samples:\n  " + "\n  ".join(report))
    assert not over, f"slope over its limit: {over}\n" + "\n".join(report)
    assert per_instance <= DTS_BYTES_PER_INSTANCE

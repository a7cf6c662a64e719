"""kill -9 the listener twice while 1,000 mixed messages flow: nothing lost, nothing doubled.

The listener is a separate `sbworker run --no-worker` process; the DTS worker runs in this process so that the
approval workflow's first activity (`activities.approvals.OUTBOX`) shows how often each instance ran.
localbus keeps its messages in sqlite (`--data`) and has 5 s locks, so what a killed listener held comes back
quickly, with its delivery count raised.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dts import DtsBackend
from tests.reliability import verify, workload
from tests.reliability.common import Publisher, durable_bus, queue_total
from tests.support.processes import LISTENING, Process, sbworker_env
from tests.support.wait import until

pytestmark = pytest.mark.usefixtures("dts_worker")


@pytest.mark.timeout(400)
def test_kill9_twice_during_1000_mixed_messages_loses_and_doubles_nothing(
        tmp_path: Path, dts_backend: DtsBackend, dts_client: Any) -> None:
    _kill_run(tmp_path, dts_client, dts_backend, scale=1, kills=(250, 600))


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_kill9_six_times_during_3000_mixed_messages(tmp_path: Path, dts_backend: DtsBackend,
                                                         dts_client: Any) -> None:
    """SOAK=1 only: three times the stream, six kills."""
    _kill_run(tmp_path, dts_client, dts_backend, scale=3, kills=(300, 700, 1100, 1500, 1900, 2400))


def _kill_run(tmp_path: Path, dts_client: Any, dts_backend: DtsBackend, *, scale: int,
              kills: tuple[int, ...]) -> None:
    run = f"k9-{uuid.uuid4().hex[:8]}"
    w = workload.mixed(run, starts=400 * scale, duplicates=200 * scale, approvals=200 * scale, invalid=200 * scale)
    assert len(w) == 1000 * scale
    with durable_bus(tmp_path, lock="PT5S") as bus:
        env = sbworker_env(bus.connection_string, dts_backend.connection_string, MAX_CONCURRENT_MESSAGES=16,
                           PREFETCH_COUNT=10, MAX_MESSAGE_BYTES=workload.MAX_MESSAGE_BYTES,
                           APPROVAL_NOT_FOUND_WINDOW_SECONDS=180, SHUTDOWN_GRACE_SECONDS=5)
        with Process(["run", "--no-worker"], env, tmp_path / "listener.log", ready=LISTENING) as listener:
            listener.start()
            publisher = Publisher(bus.connection_string, w, pause=0.05)  # kills land mid-stream
            publisher.start()

            def settled_at_least(n: int) -> bool:
                return publisher.sent - queue_total(bus) >= n

            for threshold in kills:  # each kill each while messages are in flight and more keep coming
                until(lambda t=threshold: settled_at_least(t), timeout=120, what=f"{threshold} settled",
                           on_timeout=lambda: verify.progress(bus, dts_client, w))
                assert queue_total(bus) > 0 or publisher.is_alive(), "kill would not be mid-stream"
                listener.kill9()
                listener.start()
            publisher.join(120)
            assert publisher.error is None, publisher.error
            assert publisher.sent == len(w)
            until(lambda: verify.all_settled(bus, dts_client, w), timeout=240, interval=0.5,
                       what="every message settled and every approval applied",
                       on_timeout=lambda: verify.progress(bus, dts_client, w))
            assert listener.alive, listener.output[-4000:]
            assert listener.kills == len(kills) and listener.starts == len(kills) + 1
            found = verify.problems(bus, dts_client, w, run)
            assert not found, "\n".join(found[:40])
            assert listener.terminate() == 0

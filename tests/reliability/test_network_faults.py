"""Links that are slow, reset or silently dead, between the listener and the broker and between the listener and
worker and DTS (`faultproxy.FaultProxy`), each under 1,000 mixed messages.

Each run must end with nothing lost, no instance twice, no valid message dead-lettered and the queue empty
(`verify.problems`). For a half-open link (bytes dropped, no FIN, for far longer than the 5 s lock) the listener
must also notice by itself: a start published after the link died must reach a waiting instance within
RECOVERY_BOUND seconds. The measured figure is printed (`-s`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability import verify, workload
from tests.reliability.common import (
    Publisher,
    awaiting_approval,
    publish,
    queue_total,
    start_message,
)
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.netstack import NetStack, net_stack, started_more_than_once
from tests.support.wait import until

# A dead link must be noticed and replaced within this (generous on a shared 2-core machine): AMQP heartbeats or
# gRPC keepalive at ~10 s, their timeout, the reconnect backoff and a 5 s lock expiry fit well inside.
RECOVERY_BOUND = 60.0
# The co-hosted worker's DTS link: its stream is only ended by gRPC keepalive, which took about 60 s to call a
# half-open link dead (measured, whatever keepalive_time_ms asks), and localdts then offers the work again.
DTS_WORKER_RECOVERY_BOUND = 90.0
# The run, after the last fault, must settle everything within this.
CONVERGE_TIMEOUT = 150.0


def _run(tmp_path: Path, name: str, fault: Callable[[NetStack, Publisher], None], *, seed: int,
         activity_reruns: bool = False) -> None:
    """`activity_reruns`: the worker's DTS link is cut, so an activity whose answer was lost runs again (at least
    once, as in DTS): then "no instance twice" is read from each history (one ExecutionStarted), not from how often
    the first activity ran."""
    run = f"{name}-{uuid.uuid4().hex[:6]}"
    w = workload.mixed(run, starts=400, duplicates=200, approvals=200, invalid=200, seed=seed)
    assert len(w) == 1000
    with net_stack(tmp_path) as stack:
        publisher = Publisher(stack.bus.connection_string, w)
        publisher.start()
        fault(stack, publisher)
        publisher.join(120)
        assert publisher.error is None, publisher.error
        assert publisher.sent == len(w)
        until(lambda: verify.all_settled(stack.bus, stack.client, w), timeout=CONVERGE_TIMEOUT, interval=0.5,
                   what="every message settled and every approval applied",
                   on_timeout=lambda: verify.progress(stack.bus, stack.client, w)
                   + "\n" + stack.listener.output[-3000:])
        found = verify.problems(stack.bus, stack.client, w, run)
        if activity_reruns:
            reruns = [p for p in found if "its first activity ran" in p]
            found = [p for p in found if p not in reruns] + started_more_than_once(stack.client, w.start_inputs)
            print(f"\n{len(reruns)} activities ran again after their answer was lost on a reset link")
        assert not found, "\n".join(found[:40])
        assert stack.listener.alive, stack.listener.output[-4000:]
        assert stack.listener.terminate() == 0


@pytest.mark.timeout(300)
def test_latency_and_jitter_on_both_links_lose_and_double_nothing(tmp_path: Path) -> None:
    """30-80 ms each way on every chunk (in order), both links, the whole run."""
    def fault(stack: NetStack, _publisher: Publisher) -> None:
        stack.bus_proxy.set(latency=0.03, jitter=0.05)
        stack.dts_proxy.set(latency=0.03, jitter=0.05)

    _run(tmp_path, "lat", fault, seed=21)


@pytest.mark.timeout(300)
def test_connection_resets_on_both_links_lose_and_double_nothing(tmp_path: Path) -> None:
    """An RST on every open connection of both links, every 3 s, six times, while messages flow and settle."""
    def fault(stack: NetStack, publisher: Publisher) -> None:
        until(lambda: publisher.sent - queue_total(stack.bus) >= 100, timeout=60, what="100 settled")
        for _ in range(6):
            stack.bus_proxy.reset()
            stack.dts_proxy.reset()
            time.sleep(3)
        print(f"\nresets: broker link {stack.bus_proxy.resets}, DTS link {stack.dts_proxy.resets}; "
              f"connections accepted: {stack.bus_proxy.accepted} and {stack.dts_proxy.accepted}")
        assert stack.bus_proxy.resets >= 3 and stack.dts_proxy.resets >= 3

    _run(tmp_path, "rst", fault, seed=22, activity_reruns=True)


@pytest.mark.timeout(300)
def test_bandwidth_cap_on_both_links_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """64 KiB/s per direction per connection: a prefetch of 10 with 8 KiB bodies queues behind itself."""
    def fault(stack: NetStack, _publisher: Publisher) -> None:
        stack.bus_proxy.set(bandwidth=64 * 1024)
        stack.dts_proxy.set(bandwidth=64 * 1024)

    _run(tmp_path, "bw", fault, seed=23)


def _half_open(proxy_of: Callable[[NetStack], FaultProxy], label: str, bound: float = RECOVERY_BOUND
               ) -> Callable[[NetStack, Publisher], None]:
    def fault(stack: NetStack, publisher: Publisher) -> None:
        until(lambda: publisher.sent - queue_total(stack.bus) >= 300, timeout=60, what="300 settled")
        proxy = proxy_of(stack)
        stalled = proxy.stall()
        began = time.monotonic()
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        publish(stack.bus.connection_string, [start_message("approval_workflow", input={"timeout_seconds": 900},
                                                            instance_id=probe)])

        def recovered() -> bool:
            state = stack.client.get_orchestration_state(probe)
            return state is not None and awaiting_approval(state)

        until(recovered, timeout=bound, interval=0.25,
                   what=f"a start published after the {label} link went half-open to reach its instance",
                   on_timeout=lambda: stack.listener.output[-2500:])
        print(f"\n{label} link half-open ({stalled} connection(s) silenced, never closed): recovered in "
              f"{time.monotonic() - began:.1f}s (bound {bound:.0f}s)")
    return fault


@pytest.mark.timeout(300)
def test_half_open_broker_link_is_detected_and_replaced_within_the_bound(tmp_path: Path) -> None:
    _run(tmp_path, "hob", _half_open(lambda s: s.bus_proxy, "broker"), seed=24)


@pytest.mark.timeout(300)
def test_half_open_dts_link_is_detected_and_replaced_within_the_bound(tmp_path: Path) -> None:
    _run(tmp_path, "hod", _half_open(lambda s: s.dts_proxy, "DTS", DTS_WORKER_RECOVERY_BOUND), seed=25,
         activity_reruns=True)


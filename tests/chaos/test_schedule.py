"""Same seed, same campaign: the fault schedule and the workload are functions of the seed alone."""

from __future__ import annotations

import itertools
import subprocess
import sys

from tests.chaos.plan import make_plan
from tests.chaos.schedule import LINK_KINDS, PROCESS_KINDS, make_schedule
from tests.support.processes import REPO


def test_the_same_seed_gives_the_same_schedule_and_workload_in_another_process() -> None:
    """Printed by a fresh interpreter (another hash seed), so nothing depends on set order or the clock."""
    command = [sys.executable, "-m", "tests.chaos", "schedule", "--seed", "5", "--duration", "60"]
    first, second = (subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True,
                                    env={"PYTHONHASHSEED": str(n), "PATH": ""}).stdout for n in (1, 2))
    assert first == second
    assert "replay: make chaos SEED=5 DURATION=60 REPLICAS=" in first
    assert make_plan(5, 60) == make_plan(5, 60)
    assert make_schedule(5, 60) == make_schedule(5, 60)


def test_seeds_differ_and_together_cover_every_fault_on_every_kind_of_target() -> None:
    schedules = [make_schedule(seed, 300) for seed in range(1, 11)]
    assert len({s.describe() for s in schedules}) == 10
    assert {s.replicas for s in schedules} == {2, 3}
    seen = {(f.kind, f.target.split(".")[-1] if "." in f.target else f.target.rstrip("0123456789"))
            for s in schedules for f in s.faults}
    for kind in PROCESS_KINDS:
        assert (kind, "replica") in seen, kind
    for server in ("localbus", "localdts"):
        assert {(k, server) for k in ("kill9", "sigterm", "pause")} <= seen, server
    for kind in LINK_KINDS:
        assert {(kind, "bus"), (kind, "dts")} <= seen, kind


def test_faults_on_one_target_never_overlap_and_end_with_the_campaign() -> None:
    for seed in range(1, 21):
        s = make_schedule(seed, 120)
        assert 20 <= len(s.faults) <= 30
        for f in s.faults:
            assert f.at > 0 and f.ends <= 120
            if f.kind == "pause":
                assert f.duration > 5 or f.ends == 120, "a pause outlasts the 5 s lock"
        by_target: dict[str, list[tuple[float, float]]] = {}
        for f in s.faults:
            by_target.setdefault(f.target, []).append((f.at, f.ends))
        for spans in by_target.values():
            spans.sort()
            assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def test_the_workload_holds_every_story() -> None:
    roles = {s.role for s in make_plan(3, 300)}
    assert roles >= {"start", "start-republish", "start-again", "approval", "approval-early", "approval-republish",
                     "approval-competing", "approval-late", "approval-unknown", "approval-misdirected", "invalid",
                     "invalid-republish", "event", "event-republish", "event-foreign", "event-late",
                     "event-misdirected"}
    plan = make_plan(3, 300)
    assert len({s.message_id for s in plan if not s.role.endswith("republish")}) == \
        sum(not s.role.endswith("republish") for s in plan), "message ids are unique but for republishes"

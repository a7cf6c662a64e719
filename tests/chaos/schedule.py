"""A seed → the campaign's fault schedule: which fault, on what, when and for how long.

Pure and deterministic (one `random.Random(seed)`, nothing read from the clock or the machine), so the same seed,
duration and replica count always give the same schedule, which is printed with the command that replays it.
Faults on one target never overlap (a process is down, paused or up; a link has one fault at a time); faults on
different targets overlap freely, because production faults come together.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

LOCALBUS = "localbus"
LOCALDTS = "localdts"

# kind → (weight, targets it applies to, (shortest, longest) duration in seconds). "Process" targets are the
# replicas and the two servers; "link" targets are one replica's connection to the broker or to DTS, through its
# own fault proxy. A pause is longer than the 5 s lock on purpose: the locks a paused process holds expire.
PROCESS_KINDS: dict[str, tuple[float, tuple[float, float]]] = {
    "kill9": (3.0, (0.5, 8.0)),     # SIGKILL, then restarted after the duration
    "sigterm": (1.5, (0.5, 5.0)),   # a graceful stop, then restarted after the duration
    "pause": (2.0, (6.0, 15.0)),    # SIGSTOP, SIGCONT after the duration
}
LINK_KINDS: dict[str, tuple[float, tuple[float, float]]] = {
    "latency": (2.0, (5.0, 20.0)),     # 10-200 ms each way on every chunk, plus up to 100 ms of jitter
    "bandwidth": (1.0, (5.0, 20.0)),   # 8-64 KiB/s per direction per connection
    "reset": (2.0, (0.0, 0.0)),        # an RST on every open connection of the link, at once
    "half_open": (1.5, (0.0, 0.0)),    # every open connection goes silent for good (no FIN); new ones pass
    "partition": (1.0, (3.0, 15.0)),   # silent, and new connections too, until healed after the duration
}
# Only the replicas and the servers are processes the campaign runs; SIGTERM of a server is a clean restart.
SERVER_KINDS = ("kill9", "sigterm", "pause")
FAULTS_PER_MINUTE = 14.0
WARM_UP = 4.0  # seconds of clean running first: every replica is connected before anything breaks
QUIET_END = 3.0  # no new fault this close to the end
DEFAULT_WINDOW = 30.0  # `make chaos`'s APPROVAL_NOT_FOUND_WINDOW_SECONDS unless WINDOW= says otherwise


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the campaign starts
    kind: str
    target: str  # "replica0".., "localbus", "localdts", or a link: "replica0.bus", "replica0.dts"
    duration: float  # until the restart, resume or heal (0: an instant fault)
    params: dict[str, float] = field(default_factory=dict)

    @property
    def ends(self) -> float:
        return self.at + self.duration

    def describe(self) -> str:
        extra = "".join(f" {k}={v:g}" for k, v in sorted(self.params.items()))
        span = f" for {self.duration:.1f}s" if self.duration else ""
        return f"{self.at:7.2f}s  {self.kind:<9} {self.target:<13}{span}{extra}"


@dataclass(frozen=True)
class Schedule:
    seed: int
    duration: float
    replicas: int
    faults: tuple[Fault, ...]

    def replay_command(self, window: float = DEFAULT_WINDOW) -> str:
        """`window`: the replicas' approval not-found window, which is not part of the schedule but shapes the run."""
        return (f"make chaos SEED={self.seed} DURATION={self.duration:g} REPLICAS={self.replicas}"
                + (f" WINDOW={window:g}" if window != DEFAULT_WINDOW else ""))

    def describe(self) -> str:
        lines = [f"schedule of seed {self.seed}: {self.duration:g}s, {self.replicas} replicas, "
                 f"{len(self.faults)} faults (replay: {self.replay_command()})"]
        lines += ["  " + f.describe() for f in self.faults]
        return "\n".join(lines)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            key = f"{f.kind} {_target_kind(f.target)}"
            out[key] = out.get(key, 0) + 1
        return out

    def as_record(self) -> dict[str, Any]:
        return {"seed": self.seed, "duration": self.duration, "replicas": self.replicas,
                "faults": [asdict(f) for f in self.faults]}


def _target_kind(target: str) -> str:
    if target.startswith("replica"):
        return "link" if "." in target else "replica"
    return target


def replicas_for(seed: int) -> int:
    """2 or 3 replicas, chosen by the seed (a separate stream, so --replicas does not shift the schedule)."""
    return random.Random(f"replicas-{seed}").choice((2, 3))


def make_schedule(seed: int, duration: float, replicas: int | None = None) -> Schedule:
    n_replicas = replicas if replicas is not None else replicas_for(seed)
    rng = random.Random(seed)
    processes = [f"replica{i}" for i in range(n_replicas)] + [LOCALBUS, LOCALDTS]
    links = [f"replica{i}.{side}" for i in range(n_replicas) for side in ("bus", "dts")]
    wanted = round(FAULTS_PER_MINUTE * duration / 60.0)
    busy: dict[str, list[tuple[float, float]]] = {}
    faults: list[Fault] = []
    latest = max(WARM_UP, duration - QUIET_END)
    for _ in range(wanted * 20):  # placement attempts: a crowded target refuses some
        if len(faults) >= wanted:
            break
        on_link = rng.random() < 0.5
        target = rng.choice(links if on_link else processes)
        kinds = LINK_KINDS if on_link else {k: v for k, v in PROCESS_KINDS.items()
                                            if target.startswith("replica") or k in SERVER_KINDS}
        names = sorted(kinds)
        kind = rng.choices(names, weights=[kinds[k][0] for k in names])[0]
        low, high = kinds[kind][1]
        length = round(rng.uniform(low, high), 2)
        at = round(rng.uniform(WARM_UP, latest), 2)
        length = min(length, max(0.0, duration - at))
        # A process needs a moment to come back before the next fault on it; a link fault is instant to lift.
        span = (at - 1.0, at + length + (3.0 if not on_link else 0.5))
        if any(a < span[1] and span[0] < b for a, b in busy.get(target, [])):
            continue
        busy.setdefault(target, []).append(span)
        faults.append(Fault(at, kind, target, length, _params(rng, kind)))
    faults.sort(key=lambda f: (f.at, f.target))
    return Schedule(seed, float(duration), n_replicas, tuple(faults))


def _params(rng: random.Random, kind: str) -> dict[str, float]:
    if kind == "latency":
        return {"latency": round(rng.uniform(0.01, 0.2), 3), "jitter": round(rng.uniform(0.0, 0.1), 3)}
    if kind == "bandwidth":
        return {"bandwidth": float(rng.choice((8, 16, 32, 64)) * 1024)}
    return {}

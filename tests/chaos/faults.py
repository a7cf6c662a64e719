"""Plays a fault schedule on a running stack, on a thread of its own, writing each fault to the history.

A process that dies when no fault asked for it is a finding: it is recorded (`crash`) and restarted.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from tests.chaos.history import History
from tests.chaos.schedule import Fault, Schedule
from tests.chaos.stack import Stack, send_signal
from tests.support.processes import Process

TERM_WAIT = 30.0  # a SIGTERMed replica settles in SHUTDOWN_GRACE_SECONDS (5 s); a server stops at once


class FaultPlayer(threading.Thread):
    def __init__(self, stack: Stack, schedule: Schedule, history: History, t0: float) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.stack = stack
        self.schedule = schedule
        self.history = history
        self.t0 = t0  # time.monotonic() of the campaign's start
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._active: dict[str, Fault] = {}  # target → the fault on it now
        self._lock = threading.Lock()  # the player and heal_all never act on a target at once

    def run(self) -> None:
        steps = sorted([(f.at, 0, f) for f in self.schedule.faults]
                       + [(f.ends, 1, f) for f in self.schedule.faults if f.kind != "reset"],
                       key=lambda s: (s[0], s[1]))
        try:
            for at, phase, fault in steps:
                while not self._halt.is_set() and time.monotonic() < self.t0 + at:
                    self.watch()
                    self._halt.wait(min(0.5, max(0.0, self.t0 + at - time.monotonic())))
                if self._halt.is_set():
                    return
                with self._lock:
                    (self._begin if phase == 0 else self._end)(fault)
            while not self._halt.wait(0.5):
                self.watch()
        except BaseException as error:  # reported by the campaign
            self.error = error

    def stop(self) -> None:
        self._halt.set()
        self.join(60)

    def heal_all(self) -> None:
        """End every fault still active: processes up and running, links clean (half-open ones stay dead)."""
        self.stop()
        with self._lock:
            for fault in list(self._active.values()):
                self._end(fault)
            for name, process in self.stack.processes.items():
                if not process.alive:
                    self._restart(name, process)

    # --- the faults ---------------------------------------------------------------------------------------
    def _record(self, fault: Fault, phase: str, **extra: Any) -> None:
        self.history.write("fault", at=round(time.monotonic() - self.t0, 2), kind=fault.kind, target=fault.target,
                           phase=phase, **extra)

    def _begin(self, fault: Fault) -> None:
        self._active[fault.target] = fault
        if fault.target in self.stack.links:
            link = self.stack.links[fault.target]
            if fault.kind in ("latency", "bandwidth"):
                link.set(**fault.params)
            elif fault.kind == "reset":
                self._record(fault, "begin", connections=link.reset())
                self._active.pop(fault.target)
                return
            elif fault.kind == "half_open":
                self._record(fault, "begin", connections=link.stall())
                return
            elif fault.kind == "partition":
                link.stall(new_too=True)
            self._record(fault, "begin", **fault.params)
            return
        process = self.stack.processes[fault.target]
        if not process.alive:
            self._record(fault, "begin", note="was not running")
            return
        if fault.kind == "kill9":
            process.kill9()
        elif fault.kind == "sigterm":
            send_signal(process, signal.SIGTERM)
        elif fault.kind == "pause":
            send_signal(process, signal.SIGSTOP)
        self._record(fault, "begin")

    def _end(self, fault: Fault) -> None:
        if self._active.get(fault.target) is not fault:
            return
        del self._active[fault.target]
        if fault.target in self.stack.links:
            self.stack.links[fault.target].heal()
            self._record(fault, "end")
            return
        process = self.stack.processes[fault.target]
        if fault.kind == "pause":
            send_signal(process, signal.SIGCONT)
            self._record(fault, "end")
            return
        extra: dict[str, Any] = {}
        if fault.kind == "sigterm" and process.proc is not None:
            try:
                extra["exit_code"] = process.proc.wait(TERM_WAIT)
            except Exception:
                extra["exit_code"] = f"did not stop within {TERM_WAIT:g}s of SIGTERM; killed"
                process.kill9()
        self._restart(fault.target, process)
        self._record(fault, "end", **extra)

    def _restart(self, name: str, process: Process) -> None:
        if name.startswith("replica"):
            process.start(wait_ready=False)
        else:
            process.start(timeout=60)

    def watch(self) -> None:
        """A process that exited although no fault is acting on it crashed: record it and bring it back."""
        with self._lock:
            for name, process in self.stack.processes.items():
                if name in self._active or process.alive or process.proc is None:
                    continue
                self.history.write("crash", target=name, exit_code=process.proc.returncode,
                                   at=round(time.monotonic() - self.t0, 2))
                self._restart(name, process)

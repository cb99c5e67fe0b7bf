"""Which attempts this agent runs, has run, or was told to stop before they came: the agent's one table.

Launches and stops arrive through dramatiq at least once and in any order,
so the table makes ``ensure_running`` idempotent on ``(job_id, attempt,
replica)``: a key that runs, has ended, or whose attempt was stopped before
its launch arrived is never started (again). Every piece of the agent
reads the table through these methods; none keeps its own copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from workers.messages import LaunchSpec
from workers.runtime.base import ExitReason, Runtime
from workers.sampler import Holder, Holders

RunKey = tuple[str, int, int]  # (job_id, attempt, replica)


@dataclass
class Run:
    """One replica of one attempt on this node, from its launch (or adoption) to its acknowledged exit."""

    spec: LaunchSpec
    stdout_path: Path
    stderr_path: Path
    handle: str | None = None
    runtime: Runtime | None = None
    stop_reason: str | None = None
    stop_as: ExitReason = ExitReason.STOPPED
    stop_cause: str | None = None  # the agent's own reason to stop it (fence, shutdown), reported as the StopCause
    stop_grace_s: float = 10.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    shipped: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})  # log bytes sent
    done: threading.Event = field(default_factory=threading.Event)
    adopted: bool = False  # found in a runtime after an agent restart (already claimed, already launched)
    elapsed_s: float = 0.0  # run time before this agent took it over (time limit)
    engine_lost: bool = False  # the runtime stopped answering while the attempt ran

    @property
    def key(self) -> RunKey:
        return (self.spec.job_id, self.spec.attempt, self.spec.replica)

    def request_stop(self, reason: str, grace_s: float, *, as_reason: ExitReason = ExitReason.STOPPED,
                     cause: str | None = None) -> None:
        """Ask the run's supervisor to stop it (the first request wins: its reason is the one reported)."""
        if self.stop_event.is_set():
            return
        self.stop_reason = reason
        self.stop_as = as_reason
        self.stop_cause = cause
        self.stop_grace_s = grace_s
        self.stop_event.set()


class RunBook:
    """The table of runs, under one lock."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self._runs: dict[RunKey, Run] = {}
        self._ended: set[RunKey] = set()
        self._stopped: set[tuple[str, int]] = set()  # (job, attempt) stopped before it ran here
        self._lock = threading.Lock()

    def new_run(self, spec: LaunchSpec) -> Run:
        """A run with its log files under ``work_dir/logs/<job>/<attempt>.<replica>.{stdout,stderr}``."""
        logs = self.work_dir / "logs" / spec.job_id
        return Run(spec, logs / f"{spec.attempt}.{spec.replica}.stdout", logs / f"{spec.attempt}.{spec.replica}.stderr")

    def admit(self, spec: LaunchSpec) -> Run | None:
        """A new run for ``spec``, or None for a duplicate or late delivery (running, done or stopped)."""
        key = (spec.job_id, spec.attempt, spec.replica)
        with self._lock:
            if key in self._runs or key in self._ended or key[:2] in self._stopped:
                return None
            run = self.new_run(spec)
            self._runs[key] = run
            return run

    def put(self, run: Run) -> None:
        """Add a run found in a runtime after a restart (re-adoption)."""
        with self._lock:
            self._runs[run.key] = run

    def matching(self, job_id: str, attempt: int, replica: int | None) -> list[Run]:
        """The runs of one attempt here (every replica when ``replica`` is None); if none, remember the stop.

        A stop that arrives before its launch is kept, so the late launch is ignored.
        """
        with self._lock:
            runs = [
                r for (job, att, rep), r in self._runs.items()
                if job == job_id and att == attempt and (replica is None or rep == replica)
            ]
            if not runs:
                if replica is None:
                    self._stopped.add((job_id, attempt))
                else:
                    self._ended.add((job_id, attempt, replica))
            return runs

    def forget(self, run: Run) -> None:
        """Drop a run that never started, so a re-sent launch of it is not ignored."""
        with self._lock:
            if self._runs.get(run.key) is run:
                self._runs.pop(run.key)

    def end(self, run: Run) -> None:
        """The run is over here: no launch of its key is taken again (a forgotten run stays forgotten)."""
        with self._lock:
            if self._runs.get(run.key) is run:
                self._runs.pop(run.key)
                self._ended.add(run.key)

    def mark_ended(self, key: RunKey) -> None:
        """A key that must never be started here (a stale attempt removed after a restart)."""
        with self._lock:
            self._ended.add(key)

    def keys(self) -> list[RunKey]:
        with self._lock:
            return sorted(self._runs)

    def runs(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def holders(self) -> Holders:
        """GPU / MIG UUID -> the live runs holding it here (the sampler's view)."""
        out: Holders = {}
        for run in self.runs():
            if run.done.is_set():
                continue
            for uuid in run.spec.gpu_uuids:
                out.setdefault(uuid, []).append(Holder(run.spec.job_id, run.spec.attempt, run.spec.replica,
                                                       run.handle))
        return out

"""A point-in-time view of the cluster and the queue, as the admission cycle sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from partitioner.types import ClusterState, Placement, Request
from queue_service.admission.units import request_equivalents


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A queued job, reduced to what ordering, quotas and fit need."""

    job_id: str
    project: str
    request: Request
    priority: int  # the priority class's value
    submitted_at: datetime
    priority_override: int | None = None
    time_limit_s: int | None = None
    fair_share: float = 0.0  # the project's decayed usage / weight: lower runs first
    preemptible: bool = False

    @property
    def effective_priority(self) -> int:
        """An operator override replaces the class value (above or below every class)."""
        return self.priority if self.priority_override is None else self.priority_override

    @property
    def gpu_equivalents(self) -> float:
        """Whole-GPU equivalents the job will hold (``units.request_equivalents``: its GPU is not chosen yet)."""
        return request_equivalents(self.request)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """An admitted or running job and what it holds."""

    job_id: str
    project: str
    placement: Placement
    effective_priority: int
    preemptible: bool
    started_at: datetime | None  # None: admitted, not started yet
    expected_end: datetime | None  # start + time limit (or stop deadline); None: unknown
    gpu_equivalents: float = 0.0  # what its allocations hold (units.held_equivalents)
    stopping: bool = False  # a stop (preemption, reclaim, cancel) is under way
    grace_s: float = 30.0  # how long a stop may take


@dataclass(frozen=True, slots=True)
class Quota:
    """A project's guaranteed capacity and how far above it it may borrow (GPU equivalents)."""

    guaranteed: float = 0.0
    borrow_limit: float | None = None  # None: may borrow any idle capacity

    @property
    def ceiling(self) -> float:
        return float("inf") if self.borrow_limit is None else self.guaranteed + self.borrow_limit


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Free capacity (inside ``cluster``), pending and running work, quotas: taken in one read."""

    cluster: ClusterState
    pending: tuple[PendingJob, ...]
    now: datetime
    running: tuple[RunningJob, ...] = ()
    quotas: dict[str, Quota] = field(default_factory=dict)
    min_run_s: float = 60.0  # a job is not preempted again before it ran this long

    def usage_by_project(self) -> dict[str, float]:
        """GPU equivalents each project holds now (stopping jobs still count until they end)."""
        usage: dict[str, float] = {}
        for job in self.running:
            usage[job.project] = usage.get(job.project, 0.0) + job.gpu_equivalents
        return usage

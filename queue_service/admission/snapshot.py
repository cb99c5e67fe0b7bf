"""A point-in-time view of the cluster and the queue, as the admission cycle sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from partitioner.types import ClusterState, Request


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A queued job, reduced to what ordering and fit need."""

    job_id: str
    project: str
    request: Request
    priority: int  # the priority class's value
    submitted_at: datetime
    priority_override: int | None = None
    time_limit_s: int | None = None

    @property
    def effective_priority(self) -> int:
        """An operator override replaces the class value (above or below every class)."""
        return self.priority if self.priority_override is None else self.priority_override


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Free capacity (inside ``cluster``) plus the pending jobs, taken in one read."""

    cluster: ClusterState
    pending: tuple[PendingJob, ...]
    now: datetime
    notes: tuple[str, ...] = field(default=())  # cluster-wide facts for wait reasons

"""Measured usage: NVML samples from agents and idle detection (``reports`` turns them into busy share).

A sample says how busy a job kept one GPU (SM %) and how much GPU memory
it used over the ``window_s`` before it arrived. The service stamps it
with its own clock (``ledger.db_now``), never the agent's. A job's busy
time is the sum of ``window_s × SM % / 100`` over its samples; "busy share"
divides that by its allocated GPU-time over the same samples' windows, so a
3g MIG slice that is always busy scores 1.0, not 3/7.

MIG devices report no SM % (NVML cannot say): their samples count towards
memory only, and the busy share is ``None`` when no sample had a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.billing.ledger import db_now
from queue_service.db.billing_models import GpuSample
from queue_service.db.models import Allocation, Job, Node
from queue_service.errors import StaleAttempt

__all__ = ["SampleIn", "is_idle", "record"]


@dataclass(frozen=True, slots=True)
class SampleIn:
    """One job's use of one GPU (or MIG device) as an agent reports it."""

    job_id: str
    attempt: int
    replica: int
    gpu_uuid: str
    window_s: float
    sm_percent: float | None
    memory_used_mib: int


def record(session: Session, *, node_name: str, samples: list[SampleIn]) -> int:
    """Store samples whose (job, attempt, replica, GPU) is allocated on ``node_name``; returns how many.

    An agent may only report its own allocations: a sample for a GPU the
    replica does not hold there is refused (StaleAttempt), like its other reports. Samples of an
    attempt that was here but is over (its allocation released) are dropped, not stored: the batch
    was taken a moment before it ended, and the other jobs' samples in it still count.
    """
    if not samples:
        return 0
    now = db_now(session)
    node_id = session.scalar(select(Node.id).where(Node.name == node_name))
    keys = {(s.job_id, s.attempt, s.replica) for s in samples}
    held: dict[tuple[str, int, int], set[str]] = {}
    projects: dict[str, str] = {}
    ended: set[tuple[str, int, int]] = set()
    for alloc, project_id in session.execute(
        select(Allocation, Job.project_id).join(Job, Job.id == Allocation.job_id)
        .where(Allocation.node_id == node_id, Allocation.job_id.in_({k[0] for k in keys}))
    ).all():
        key = (alloc.job_id, alloc.attempt, alloc.replica)
        if alloc.released_at is not None:
            ended.add(key)
            continue
        held.setdefault(key, set()).update(u for u in (alloc.gpu_uuid, alloc.mig_uuid) if u)
        projects[alloc.job_id] = project_id
    stored = 0
    for s in samples:
        key = (s.job_id, s.attempt, s.replica)
        if key in ended and key not in held:
            continue
        if s.gpu_uuid not in held.get(key, set()):
            raise StaleAttempt(f"replica {s.replica} of job {s.job_id} attempt {s.attempt} "
                               f"holds no GPU {s.gpu_uuid} on {node_name}")
        session.add(GpuSample(
            job_id=s.job_id, attempt=s.attempt, replica=s.replica, project_id=projects[s.job_id], node_id=node_id,
            gpu_uuid=s.gpu_uuid, at=now, window_s=s.window_s,
            sm_percent=None if s.sm_percent is None else max(0.0, min(100.0, s.sm_percent)),
            memory_used_mib=max(0, s.memory_used_mib),
        ))
        stored += 1
    return stored


def is_idle(session: Session, *, job_id: str, attempt: int, threshold_percent: float, after_s: float) -> bool:
    """True when every SM figure of the attempt over the last ``after_s`` is below the threshold.

    Needs samples covering at least ``after_s`` (a job that just started is
    not idle yet, whatever its first sample says).
    """
    now = db_now(session)
    rows = session.execute(
        select(GpuSample.at, GpuSample.window_s, GpuSample.sm_percent)
        .where(GpuSample.job_id == job_id, GpuSample.attempt == attempt, GpuSample.sm_percent.is_not(None))
        .where(GpuSample.at >= now - timedelta(seconds=after_s))
    ).all()
    if not rows:
        return False
    earliest = min(at - timedelta(seconds=w) for at, w, _ in rows)
    if (now - earliest).total_seconds() < after_s * 0.999:
        return False
    return all(sm is not None and sm < threshold_percent for _, _, sm in rows)

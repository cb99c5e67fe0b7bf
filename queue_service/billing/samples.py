"""Measured usage: NVML samples from agents and idle detection (``reports`` turns them into busy share).

A sample says how busy a job kept one GPU (SM %) and how much GPU memory
it used over the ``window_s`` before it arrived. The service stamps it
with its own clock (``ledger.db_now``), never the agent's. A job's busy
time is the sum of ``window_s × SM % / 100`` over its samples; "busy share"
divides that by its allocated GPU-time over the same samples' windows, so a
3g MIG slice that is always busy scores 1.0, not 3/7.

MIG devices report no SM % (NVML cannot say): their samples count towards
memory only, and the busy share is ``None`` when no sample had a figure.

Each batch also adds, per replica, one observation to its job's running
summary (``job_utilization``, :mod:`queue_service.billing.efficiency`): the
efficiency figures and the right-size hint read that row, never the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from partitioner.catalog import find_mig_profile
from queue_service.admission.units import held_equivalents
from queue_service.billing import efficiency
from queue_service.billing.ledger import db_now
from queue_service.db.billing_models import GpuSample
from queue_service.db.models import Allocation, Gpu, Job, Node
from queue_service.db.utilization_models import SHARE_BINS, JobUtilization
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
    devices: dict[tuple[str, int, int], list[tuple[tuple[str, ...], float, int]]] = {}
    for alloc, project_id, gpu_model, gpu_memory_mib in session.execute(
        select(Allocation, Job.project_id, Gpu.model, Gpu.memory_mib).join(Job, Job.id == Allocation.job_id)
        .outerjoin(Gpu, Gpu.uuid == Allocation.gpu_uuid)
        .where(Allocation.node_id == node_id, Allocation.job_id.in_({k[0] for k in keys}))
    ).all():
        key = (alloc.job_id, alloc.attempt, alloc.replica)
        if alloc.released_at is not None:
            ended.add(key)
            continue
        uuids = tuple(u for u in (alloc.mig_uuid, alloc.gpu_uuid) if u)
        held.setdefault(key, set()).update(uuids)
        projects[alloc.job_id] = project_id
        if uuids:
            devices.setdefault(key, []).append(
                (uuids, held_equivalents(alloc.kind, blocks=alloc.blocks, mig_profile=alloc.mig_profile,
                                         gpu_model=gpu_model),
                 _allocated_memory_mib(alloc, gpu_model, gpu_memory_mib)))
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
    _summarize(session, samples=[s for s in samples if (s.job_id, s.attempt, s.replica) in held],
               devices=devices, projects=projects, now=now)
    return stored


def _allocated_memory_mib(alloc: Allocation, gpu_model: str | None, gpu_memory_mib: int | None) -> int:
    """GPU memory one allocation holds: a whole GPU's, a MIG instance's, or a block share's own budget."""
    if alloc.kind == "mig" and alloc.mig_profile and gpu_model:
        profile = find_mig_profile(gpu_model, alloc.mig_profile)
        if profile is not None:
            return profile.memory_mib
    if alloc.kind == "gpu" and gpu_memory_mib:
        return gpu_memory_mib
    return alloc.gpu_memory_mib or 0


def _summarize(session: Session, *, samples: list[SampleIn],
               devices: dict[tuple[str, int, int], list[tuple[tuple[str, ...], float, int]]],
               projects: dict[str, str], now: datetime) -> None:
    """Add one observation per replica of this batch to its job's ``job_utilization`` row (locked)."""
    batches: dict[tuple[str, int, int], list[SampleIn]] = {}
    for s in samples:
        batches.setdefault((s.job_id, s.attempt, s.replica), []).append(s)
    if not batches:
        return
    job_ids = sorted({k[0] for k in batches})  # one lock order for every writer
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for job_id in job_ids:
        session.execute(dialect.insert(JobUtilization).values(
            job_id=job_id, project_id=projects[job_id], attempt=0, observations=0, sampled_s=0.0,
            allocated_equiv_s=0.0, busy_equiv_s=0.0, share_seconds=[0.0] * SHARE_BINS, memory_s=0.0,
            memory_mib_s=0.0, peak_memory_mib=0, allocated_memory_mib=0, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["job_id"]))
    rows = {r.job_id: r for r in session.scalars(
        select(JobUtilization).where(JobUtilization.job_id.in_(job_ids)).order_by(JobUtilization.job_id)
        .with_for_update().execution_options(populate_existing=True))}
    for key, batch in sorted(batches.items()):
        by_uuid = {s.gpu_uuid: s for s in batch}
        observation = efficiency.observe(
            efficiency.Device(
                equivalents=equivalents, allocated_memory_mib=memory_mib,
                sm_percent=next((by_uuid[u].sm_percent for u in uuids if u in by_uuid), None),
                memory_used_mib=next((max(0, by_uuid[u].memory_used_mib) for u in uuids if u in by_uuid), None),
            )
            for uuids, equivalents, memory_mib in devices.get(key, [])
        )
        window_s = max(s.window_s for s in batch)
        efficiency.add_observation(rows[key[0]], observation, window_s=window_s, attempt=key[1], at=now)


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

"""Reading the admission snapshot's work side from the database: running jobs as placements,
fair-share standings and quotas. (Free capacity is ``admitter.build_cluster``.)"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from partitioner.types import Placement, ReplicaPlacement, Slice, SliceKind
from queue_service.admission.fair_share import UsageInterval, charged, decayed_usage, standings
from queue_service.admission.snapshot import RunningJob
from queue_service.admission.units import held_equivalents
from queue_service.billing import efficiency
from queue_service.db.models import LIVE_STATES, Allocation, Gpu, Job, JobState, Project
from queue_service.settings import PriorityClass

AllocationRow = Any  # an ``Allocation``, or a row of (some of) its columns read by name


def allocation_equivalents(alloc: AllocationRow, gpu_model: str | None) -> float:
    """Whole-GPU equivalents one allocation row holds on a GPU of ``gpu_model`` (``units.held_equivalents``)."""
    return held_equivalents(alloc.kind, blocks=alloc.blocks, mig_profile=alloc.mig_profile, gpu_model=gpu_model)


def placement_of(rows: Sequence[AllocationRow], *, workload: str = "") -> Placement:
    """Rebuild a job's placement from its live allocation rows (``workload``: its class, for coexistence)."""
    by_replica: dict[int, list[AllocationRow]] = defaultdict(list)
    for row in rows:
        by_replica[row.replica].append(row)
    members = []
    for replica in sorted(by_replica):
        mine = by_replica[replica]
        slices = tuple(
            Slice(gpu_uuid=r.gpu_uuid, kind=SliceKind(r.kind), blocks=r.blocks, memory_mib=r.gpu_memory_mib,
                  mig_profile=r.mig_profile, mig_start=r.mig_start, mig_uuid=r.mig_uuid)
            for r in mine if r.gpu_uuid is not None and r.kind != "cpu"
        )
        members.append(ReplicaPlacement(mine[0].node_id, slices, sum(r.cpus_milli for r in mine),
                                        sum(r.memory_mib for r in mine), workload=workload))
    return Placement(tuple(members))


# What a cycle reads of the live jobs and their allocations: columns, not ORM rows. Whole ``Job`` rows carried
# every job's command, environment and labels into every cycle (1,000 hosts: 5 % of the server's time).
_LIVE_JOB_COLUMNS = (Job.id, Job.priority_class, Job.priority, Job.priority_override, Job.state, Job.started_at,
                     Job.time_limit_s, Job.stop_requested_at, Job.stop_grace_s, Job.cancel_requested, Job.workload,
                     Project.name.label("project"))
_LIVE_ALLOCATION_COLUMNS = (Allocation.job_id, Allocation.replica, Allocation.node_id, Allocation.gpu_uuid,
                            Allocation.kind, Allocation.blocks, Allocation.gpu_memory_mib, Allocation.mig_profile,
                            Allocation.mig_start, Allocation.mig_uuid, Allocation.cpus_milli, Allocation.memory_mib,
                            Gpu.model.label("gpu_model"))


def running_jobs(session: Session, *, now: datetime, classes: dict[str, PriorityClass]) -> list[RunningJob]:
    """Admitted and running jobs with what they hold and when they are expected to end."""
    live = [s.value for s in LIVE_STATES]
    jobs = session.execute(
        select(*_LIVE_JOB_COLUMNS).join(Project, Project.id == Job.project_id).where(Job.state.in_(live))
    ).all()
    allocs: dict[str, list[AllocationRow]] = defaultdict(list)
    held: dict[str, float] = defaultdict(float)
    for alloc in session.execute(
        select(*_LIVE_ALLOCATION_COLUMNS)
        .join(Job, (Allocation.job_id == Job.id) & (Allocation.attempt == Job.attempt))
        .outerjoin(Gpu, Gpu.uuid == Allocation.gpu_uuid)
        .where(Job.state.in_(live), Allocation.released_at.is_(None))
    ):
        allocs[alloc.job_id].append(alloc)
        held[alloc.job_id] += allocation_equivalents(alloc, alloc.gpu_model)
    out = []
    for job in jobs:
        if job.id not in allocs:
            continue  # between its admission's rows and their commit, or released: it holds nothing
        klass = classes.get(job.priority_class)
        value = klass.value if klass else job.priority
        grace_s = job.stop_grace_s if job.stop_grace_s is not None else (klass.grace_s if klass else 30.0)
        stopping = job.stop_requested_at is not None or job.cancel_requested
        if job.stop_requested_at is not None:
            expected_end = job.stop_requested_at + timedelta(seconds=grace_s)
        elif job.time_limit_s is not None:
            expected_end = (job.started_at or now) + timedelta(seconds=job.time_limit_s)
        else:
            expected_end = None
        out.append(RunningJob(
            job_id=job.id, project=job.project, placement=placement_of(allocs[job.id], workload=job.workload),
            effective_priority=value if job.priority_override is None else job.priority_override,
            preemptible=bool(klass and klass.preemptible),
            started_at=job.started_at if job.state == JobState.RUNNING else None,
            expected_end=expected_end, gpu_equivalents=held[job.id],
            stopping=stopping, grace_s=grace_s,
        ))
    return sorted(out, key=lambda r: r.job_id)


def decayed_project_usage(session: Session, *, now: datetime, half_life_s: float,
                          charge: str = "allocated") -> dict[str, float]:
    """Decayed GPU-equivalent seconds per project over the last five half-lives, charged by ``charge``
    (``fair_share.charged``: as held, or × each job's measured busy share)."""
    since = now - timedelta(seconds=5 * half_life_s)
    rows = session.execute(  # columns: every allocation of five half-lives, each cycle
        select(Project.name, Allocation.job_id, Allocation.kind, Allocation.blocks, Allocation.mig_profile,
               Allocation.created_at, Allocation.released_at, Gpu.model)
        .join(Job, Job.id == Allocation.job_id).join(Project, Project.id == Job.project_id)
        .outerjoin(Gpu, Gpu.uuid == Allocation.gpu_uuid)
        .where(Allocation.kind != "cpu", or_(Allocation.released_at.is_(None), Allocation.released_at >= since))
    ).all()
    busy = efficiency.busy_shares(session, {a.job_id for a in rows}) if charge == "used" else {}
    intervals = [UsageInterval(a.name, charged(allocation_equivalents(a, a.model), busy.get(a.job_id), charge),
                               a.created_at, a.released_at)
                 for a in rows]
    return decayed_usage(intervals, now=now, half_life_s=half_life_s)


def fair_share(session: Session, *, now: datetime, half_life_s: float, charge: str = "allocated") -> dict[str, float]:
    """Each project's standing: decayed GPU-equivalent seconds over the last five half-lives, per weight."""
    usage = decayed_project_usage(session, now=now, half_life_s=half_life_s, charge=charge)
    weights = dict(session.execute(select(Project.name, Project.weight)).all())
    return standings(usage, weights)

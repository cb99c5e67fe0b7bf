"""Measured use against what was allocated: per job (efficiency, right-size hint) and per group.

A job's figures come from its ``job_utilization`` row, which
``billing.samples.record`` keeps up to date as samples arrive (see
:mod:`queue_service.db.utilization_models` for what each sum means); nothing
here reads ``gpu_samples``.

**Busy share** is GPU-equivalent seconds of SM work over GPU-equivalent
seconds held on the devices that reported SM figures: a whole GPU at 40 %
SM is 0.4; 50 blocks (0.5 of a GPU) whose processes kept 12 % of the GPU's
SMs busy is 0.24; a MIG instance reports no SM % (NVML cannot say), so it
counts towards memory only and a MIG job's busy share is ``None``.

**The right-size hint** (:func:`right_size`, one rule): take the busy share
the job stayed at or below for ``percentile`` (90 %) of its sampled run,
times what it asked (GPUs or blocks per replica) — that is what it "used
at most for 90 % of its run"; add ``headroom`` (25 %) and round up: that is
what to ask. A hint is given only when that is less than what was asked and
the job was sampled for at least ``min_sampled_s`` (10 minutes). A job that
asked one whole GPU and used at most half of it is pointed at blocks (a
shared GPU). Bursty jobs whose peaks are above the percentile for less than
10 % of the run are told to ask for their usual need; that is the intent.

**Per group** (:func:`used_by_group`): allocated GPU-equivalent seconds from
the ledger, the part of them samples covered (``measured``), and busy
GPU-equivalent seconds; the headline figure is busy / measured, "GPU busy
time as a share of allocated time", with ``coverage`` saying how much of the
allocated time was measured at all (simulated GPUs and MIG send no SM %).
A job counts whole in a window it overlaps (its summary is not split by time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from queue_service.billing.ledger import db_now, gpu_equivalents
from queue_service.db.base import in_chunks
from queue_service.db.billing_models import UsageInterval
from queue_service.db.models import ApiToken, Job
from queue_service.db.utilization_models import SHARE_BINS, JobUtilization
from queue_service.errors import InvalidRequest

__all__ = [
    "EFFICIENCY_GROUP_BY", "Device", "GroupUse", "JobEfficiency", "Observation", "RightSize",
    "add_observation", "busy_shares", "job_efficiency", "observe", "percentile_share", "right_size",
    "used_by_group",
]

EFFICIENCY_GROUP_BY = ("project", "workload", "user")
PERCENTILE = 0.9
HEADROOM = 1.25
MIN_SAMPLED_S = 600.0
BLOCKS_PER_GPU = 100


# -- one observation: a replica's devices in one sample batch ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Device:
    """One device a replica holds, with what it was allocated and (if sampled) what it used."""

    equivalents: float  # whole-GPU equivalents held (admission.units)
    allocated_memory_mib: int
    sm_percent: float | None  # of the whole GPU (None: no figure, e.g. MIG, or not in this batch)
    memory_used_mib: int | None  # None: not in this batch


@dataclass(frozen=True, slots=True)
class Observation:
    """A replica's use over one window: busy and held GPU-equivalents (SM devices), memory used and held."""

    allocated_equiv: float
    busy_equiv: float
    memory_used_mib: int
    allocated_memory_mib: int
    has_sm: bool
    has_memory: bool

    @property
    def share(self) -> float:
        return min(1.0, self.busy_equiv / self.allocated_equiv) if self.allocated_equiv > 0 else 0.0


def observe(devices: Iterable[Device]) -> Observation:
    """Sum one replica's devices into one observation (busy capped at what each device holds)."""
    alloc = busy = 0.0
    used = held = 0
    has_sm = has_mem = False
    for d in devices:
        held += d.allocated_memory_mib
        if d.memory_used_mib is not None:
            used += d.memory_used_mib
            has_mem = True
        if d.sm_percent is not None and d.equivalents > 0:
            alloc += d.equivalents
            busy += min(d.equivalents, max(0.0, d.sm_percent) / 100)
            has_sm = True
    return Observation(alloc, busy, used, held, has_sm, has_mem)


def add_observation(row: JobUtilization, obs: Observation, *, window_s: float, attempt: int, at: datetime) -> None:
    """Add one observation of ``window_s`` seconds to a job's running sums (no sample is read again)."""
    row.observations = (row.observations or 0) + 1
    row.attempt = attempt
    row.updated_at = at
    row.allocated_memory_mib = max(row.allocated_memory_mib or 0, obs.allocated_memory_mib)
    if obs.has_sm:
        row.sampled_s = (row.sampled_s or 0.0) + window_s
        row.allocated_equiv_s = (row.allocated_equiv_s or 0.0) + window_s * obs.allocated_equiv
        row.busy_equiv_s = (row.busy_equiv_s or 0.0) + window_s * obs.busy_equiv
        bins = list(row.share_seconds or []) or [0.0] * SHARE_BINS
        bins[min(SHARE_BINS - 1, math.ceil(obs.share * 100 - 1e-9))] += window_s
        row.share_seconds = bins  # a new list: the JSON column sees the change
    if obs.has_memory:
        row.memory_s = (row.memory_s or 0.0) + window_s
        row.memory_mib_s = (row.memory_mib_s or 0.0) + window_s * obs.memory_used_mib
        row.peak_memory_mib = max(row.peak_memory_mib or 0, obs.memory_used_mib)


# -- the right-size hint: one rule ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RightSize:
    """What a job asked, what it used at the percentile, and what it should ask next time."""

    asked: int
    unit: str  # "GPU" or "block"
    used: float  # in ``unit``s, at the percentile
    suggest: int
    suggest_unit: str
    text: str


def percentile_share(share_seconds: Sequence[float], percentile: float = PERCENTILE) -> float | None:
    """The busy share the run stayed at or below for ``percentile`` of its sampled time (None: no samples)."""
    total = sum(share_seconds)
    if total <= 0:
        return None
    seen = 0.0
    for b, seconds in enumerate(share_seconds):
        seen += seconds
        if seen >= percentile * total * (1 - 1e-12):
            return b / 100
    return 1.0


def _units(n: float | int, unit: str) -> str:
    return f"{n:g} {unit}" + ("" if n == 1 else "s")


def _amount(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 or x >= 10 else f"{x:.1f}"


def right_size(*, asked: int, unit: str, share_seconds: Sequence[float], sampled_s: float,
               percentile: float = PERCENTILE, headroom: float = HEADROOM,
               min_sampled_s: float = MIN_SAMPLED_S) -> RightSize | None:
    """The hint for a job that asked ``asked`` GPUs or blocks per replica, or None when it is well sized.

    ``used = percentile_share × asked``; ``suggest = ceil(used × headroom)`` (at least 1); a hint only
    if ``suggest < asked`` and the run was sampled for ``min_sampled_s``. One whole GPU whose
    suggestion in blocks is at most half a GPU is pointed at blocks.
    """
    if asked <= 0 or unit not in ("GPU", "block") or sampled_s < min_sampled_s:
        return None
    share = percentile_share(share_seconds, percentile)
    if share is None:
        return None
    pct = f"{percentile * 100:g} %"
    used = share * asked
    suggest = max(1, math.ceil(used * headroom - 1e-9))
    if suggest < asked:
        return RightSize(asked, unit, used, suggest, unit,
                         f"asked {_units(asked, unit)}, used at most {_amount(used)} for {pct} of its run: "
                         f"ask {suggest}")
    if unit == "GPU" and asked == 1:
        blocks_used = share * BLOCKS_PER_GPU
        blocks = max(1, math.ceil(blocks_used * headroom - 1e-9))
        if blocks <= BLOCKS_PER_GPU // 2:
            return RightSize(asked, unit, share, blocks, "block",
                             f"asked 1 GPU, used at most {blocks_used:.0f} % of it for {pct} of its run: "
                             f"ask {blocks} blocks (a shared GPU)")
    return None


def asked_of(job: Job) -> tuple[int, str]:
    """What a job asked per replica, in the unit the hint speaks (0 for MIG and CPU-only jobs: no hint)."""
    if job.blocks:
        return job.blocks, "block"
    if job.mig_profile:
        return 0, "MIG instance"
    if job.gpus:
        return job.gpus, "GPU"
    return 0, ""


# -- per job -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JobEfficiency:
    job_id: str
    measured: bool  # any sample at all
    sampled_s: float
    busy_share: float | None
    p90_busy_share: float | None
    peak_memory_mib: int
    mean_memory_mib: float | None
    allocated_memory_mib: int
    memory_share: float | None  # peak / allocated
    idle: bool
    idle_since: datetime | None
    asked: int
    unit: str
    hint: str | None
    suggest: int | None
    suggest_unit: str | None


def job_efficiency(session: Session, *, job: Job) -> JobEfficiency:
    """A job's measured efficiency and right-size hint, from its summary row."""
    row = session.get(JobUtilization, job.id)
    asked, unit = asked_of(job)
    bins = list(row.share_seconds or []) if row is not None else []
    sampled_s = row.sampled_s if row is not None else 0.0
    hint = right_size(asked=asked, unit=unit, share_seconds=bins, sampled_s=sampled_s)
    peak = row.peak_memory_mib if row is not None else 0
    held = row.allocated_memory_mib if row is not None else 0
    return JobEfficiency(
        job_id=job.id,
        measured=row is not None and row.observations > 0,
        sampled_s=round(sampled_s, 3),
        busy_share=(round(row.busy_equiv_s / row.allocated_equiv_s, 4)
                    if row is not None and row.allocated_equiv_s > 0 else None),
        p90_busy_share=percentile_share(bins),
        peak_memory_mib=peak,
        mean_memory_mib=round(row.memory_mib_s / row.memory_s, 1) if row is not None and row.memory_s > 0 else None,
        allocated_memory_mib=held,
        memory_share=round(peak / held, 4) if held > 0 and row is not None and row.memory_s > 0 else None,
        idle=job.idle_since is not None,
        idle_since=job.idle_since,
        asked=asked,
        unit=unit,
        hint=hint.text if hint else None,
        suggest=hint.suggest if hint else None,
        suggest_unit=hint.suggest_unit if hint else None,
    )


def busy_shares(session: Session, job_ids: Iterable[str]) -> dict[str, float]:
    """Measured busy share per job, for the jobs that have SM figures (others are absent)."""
    ids = list(set(job_ids))
    out: dict[str, float] = {}
    for chunk in in_chunks(ids):
        for job_id, busy, held in session.execute(
            select(JobUtilization.job_id, JobUtilization.busy_equiv_s, JobUtilization.allocated_equiv_s)
            .where(JobUtilization.job_id.in_(chunk), JobUtilization.allocated_equiv_s > 0)
        ):
            out[job_id] = min(1.0, busy / held)
    return out


# -- per group -----------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class GroupUse:
    """One group's allocated and used GPU time, in GPU-equivalent seconds."""

    key: str
    jobs: int = 0
    allocated_gpu_s: float = 0.0  # held, from the ledger
    measured_gpu_s: float = 0.0  # held while samples with SM figures covered it
    used_gpu_s: float = 0.0  # SM-busy
    _job_ids: set[str] = field(default_factory=set, repr=False)

    @property
    def busy_share(self) -> float | None:
        return self.used_gpu_s / self.measured_gpu_s if self.measured_gpu_s > 0 else None

    @property
    def coverage(self) -> float | None:
        return min(1.0, self.measured_gpu_s / self.allocated_gpu_s) if self.allocated_gpu_s > 0 else None

    def public(self) -> dict:
        return {"key": self.key, "jobs": self.jobs, "allocated_gpu_s": round(self.allocated_gpu_s, 3),
                "measured_gpu_s": round(self.measured_gpu_s, 3), "used_gpu_s": round(self.used_gpu_s, 3),
                "busy_share": None if self.busy_share is None else round(self.busy_share, 4),
                "coverage": None if self.coverage is None else round(self.coverage, 4)}


def used_by_group(session: Session, *, project_ids: list[str], start: datetime, end: datetime,
                  group_by: str) -> tuple[list[GroupUse], GroupUse]:
    """Allocated vs used GPU time per ``project``, ``workload`` or ``user``, and the total (cluster-wide).

    Jobs whose ledger intervals overlap ``[start, end)`` count whole (allocated over their whole run, used
    from their summaries), so allocated and used describe the same jobs.
    """
    if group_by not in EFFICIENCY_GROUP_BY:
        raise InvalidRequest(f"group_by must be one of {', '.join(EFFICIENCY_GROUP_BY)}", field="group_by")
    now = db_now(session)
    total = GroupUse(key="total")
    if not project_ids:
        return [], total
    job_ids = set(session.scalars(
        select(UsageInterval.job_id).where(
            UsageInterval.project_id.in_(project_ids), UsageInterval.kind != "cpu", UsageInterval.started_at < end,
            or_(UsageInterval.ended_at.is_(None), UsageInterval.ended_at > start))
    ))
    if not job_ids:
        return [], total
    ids = sorted(job_ids)
    intervals = [iv for chunk in in_chunks(ids) for iv in session.scalars(
        select(UsageInterval).where(UsageInterval.job_id.in_(chunk), UsageInterval.kind != "cpu"))]
    workloads = {j: w for chunk in in_chunks(ids) for j, w in session.execute(
        select(Job.id, Job.workload).where(Job.id.in_(chunk)))}
    users = dict(session.execute(select(ApiToken.id, ApiToken.name)).all())
    groups: dict[str, GroupUse] = {}
    key_of: dict[str, str] = {}
    for iv in intervals:
        key = {"project": iv.project_name, "workload": workloads.get(iv.job_id) or "batch",
               "user": users.get(iv.owner_token_id or "", iv.owner_token_id or "-") or "-"}[group_by]
        key_of[iv.job_id] = key
        held_s = max(0.0, ((iv.ended_at or now) - iv.started_at).total_seconds())
        for row in (groups.setdefault(key, GroupUse(key=key)), total):
            row.allocated_gpu_s += gpu_equivalents(iv) * held_s
            row._job_ids.add(iv.job_id)
    for chunk in in_chunks(ids):
        for job_id, held, busy in session.execute(
            select(JobUtilization.job_id, JobUtilization.allocated_equiv_s, JobUtilization.busy_equiv_s)
            .where(JobUtilization.job_id.in_(chunk))
        ):
            if job_id not in key_of:
                continue
            for row in (groups[key_of[job_id]], total):
                row.measured_gpu_s += held
                row.used_gpu_s += busy
    for row in [*groups.values(), total]:
        row.jobs = len(row._job_ids)
    return sorted(groups.values(), key=lambda r: r.key), total

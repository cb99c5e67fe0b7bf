"""Usage reports: ledger intervals clipped to a window, grouped, priced, beside measured use.

Every interval overlapping ``[start, end)`` counts for the part inside it;
a running interval counts up to "now" (the database clock), never beyond.
Grouping by ``day`` splits an interval at UTC midnights, so days add up to
the window's total exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from queue_service.billing.ledger import db_now, gpu_equivalents
from queue_service.billing.prices import PriceBook
from queue_service.db.billing_models import GpuSample, UsageInterval
from queue_service.db.models import Allocation, ApiToken, Gpu
from queue_service.errors import InvalidRequest

__all__ = ["GROUP_BY", "UsageReport", "UsageRow", "clip", "parse_month", "to_csv", "usage"]

GROUP_BY = ("day", "job", "user", "gpu_model", "project")


@dataclass(slots=True)
class UsageRow:
    """One group's usage in the window. Hours are resource-hours (held × time)."""

    key: str
    project: str = ""
    gpu_hours: float = 0.0  # whole GPUs
    block_hours: float = 0.0
    mig_hours: float = 0.0  # MIG instances (any profile)
    gpu_equivalent_hours: float = 0.0  # whole-GPU equivalents (admission.units, as quotas) × hours
    gpu_memory_gib_hours: float = 0.0  # memory held beside blocks
    cpu_hours: float = 0.0
    ram_gib_hours: float = 0.0
    cost: float = 0.0
    busy_share: float | None = None  # SM-busy GPU-time / sampled GPU-time
    peak_memory_used_mib: int = 0
    allocated_gpu_memory_mib: int = 0  # largest per-device allocation in the group
    jobs: int = 0
    _job_ids: set[str] = field(default_factory=set, repr=False)
    _sampled_s: float = field(default=0.0, repr=False)
    _busy_s: float = field(default=0.0, repr=False)

    def public(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        for name in ("gpu_hours", "block_hours", "mig_hours", "gpu_equivalent_hours", "gpu_memory_gib_hours",
                     "cpu_hours", "ram_gib_hours"):
            out[name] = round(out[name], 6)
        out["cost"] = round(out["cost"], 6)
        if out["busy_share"] is not None:
            out["busy_share"] = round(out["busy_share"], 4)
        return out


@dataclass(slots=True)
class UsageReport:
    start: datetime
    end: datetime
    group_by: str
    rows: list[UsageRow]
    total: UsageRow


def parse_month(month: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` -> (2026-11-01, 2026-12-01)."""
    try:
        start = datetime.strptime(month, "%Y-%m")
    except ValueError as exc:
        raise InvalidRequest(f"month must look like 2026-11, not {month!r}", field="month") from exc
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def clip(row: UsageInterval, start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The part of ``row`` inside ``[start, end)``, an open interval ending at ``now``."""
    a = max(row.started_at, start)
    b = min(row.ended_at or now, end)
    return a, max(a, b)


def _day_cuts(a: datetime, b: datetime) -> list[tuple[datetime, datetime]]:
    out = []
    while a < b:
        midnight = datetime(a.year, a.month, a.day) + timedelta(days=1)
        out.append((a, min(b, midnight)))
        a = min(b, midnight)
    return out


def _add(row: UsageRow, iv: UsageInterval, a: datetime, b: datetime, prices: PriceBook) -> None:
    hours = (b - a).total_seconds() / 3600
    if iv.kind == "gpu":
        row.gpu_hours += iv.gpus * hours
    elif iv.kind == "mig":
        row.mig_hours += hours
    elif iv.kind == "blocks":
        row.block_hours += iv.blocks * hours
        row.gpu_memory_gib_hours += iv.gpu_memory_mib / 1024 * hours
    row.gpu_equivalent_hours += gpu_equivalents(iv) * hours
    row.cpu_hours += iv.cpus_milli / 1000 * hours
    row.ram_gib_hours += iv.memory_mib / 1024 * hours
    row.cost += prices.cost(iv, a, b)
    row.allocated_gpu_memory_mib = max(row.allocated_gpu_memory_mib, iv.gpu_memory_mib)
    row._job_ids.add(iv.job_id)


def usage(
    session: Session,
    *,
    project_ids: Iterable[str] | None,
    start: datetime,
    end: datetime,
    group_by: str = "day",
    now: datetime | None = None,
) -> UsageReport:
    """Usage of the given projects (None: all) in ``[start, end)``, grouped, priced and measured."""
    if group_by not in GROUP_BY:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY)}", field="group_by")
    if end <= start:
        raise InvalidRequest("end must be after start", field="end")
    now = now or db_now(session)
    query = select(UsageInterval).where(
        UsageInterval.started_at < end, or_(UsageInterval.ended_at.is_(None), UsageInterval.ended_at > start)
    )
    ids = None if project_ids is None else sorted(set(project_ids))
    if ids is not None:
        query = query.where(UsageInterval.project_id.in_(ids))
    intervals = list(session.scalars(query.order_by(UsageInterval.started_at, UsageInterval.id)))
    prices = PriceBook.load(session)
    users = dict(session.execute(select(ApiToken.id, ApiToken.name)).all())
    groups: dict[tuple[str, str], UsageRow] = {}
    total = UsageRow(key="total")

    def key_of(project: str, job_id: str, owner: str | None, model: str | None, day: str) -> str:
        return {"day": day, "job": job_id, "user": users.get(owner or "", owner or "-") or "-",
                "gpu_model": model or "none", "project": project}[group_by]

    job_info: dict[str, tuple[str, str | None]] = {}
    for iv in intervals:
        a, b = clip(iv, start, end, now)
        job_info[iv.job_id] = (iv.project_name, iv.owner_token_id)
        if b <= a:
            continue
        for da, db in _day_cuts(a, b) if group_by == "day" else [(a, b)]:
            key = key_of(iv.project_name, iv.job_id, iv.owner_token_id, iv.gpu_model, da.date().isoformat())
            project = iv.project_name if group_by in ("job", "project") else ""
            row = groups.setdefault((key, project), UsageRow(key=key, project=project))
            _add(row, iv, da, db, prices)
            _add(total, iv, da, db, prices)

    # Measured use: samples of the same jobs, in the same window.
    if job_info:
        models: dict[str | None, str] = {}  # GPU and MIG device UUIDs -> model
        for uuid, model in [*session.execute(select(Gpu.uuid, Gpu.model)), *session.execute(
            select(Allocation.mig_uuid, Gpu.model).join(Gpu, Gpu.uuid == Allocation.gpu_uuid)
            .where(Allocation.mig_uuid.is_not(None))
        )]:
            models[uuid] = model
        samples = session.execute(
            select(GpuSample.job_id, GpuSample.at, GpuSample.gpu_uuid, GpuSample.window_s, GpuSample.sm_percent,
                   GpuSample.memory_used_mib)
            .where(GpuSample.job_id.in_(list(job_info)), GpuSample.at >= start, GpuSample.at < end)
        ).all()
        for job_id, at, uuid, window_s, sm, mem in samples:
            project, owner = job_info[job_id]
            key = key_of(project, job_id, owner, models.get(uuid), at.date().isoformat())
            targets = [groups.get((key, project if group_by in ("job", "project") else "")), total]
            for row in (t for t in targets if t is not None):
                row.peak_memory_used_mib = max(row.peak_memory_used_mib, mem)
                if sm is not None:
                    row._sampled_s += window_s
                    row._busy_s += window_s * sm / 100
    for row in [*groups.values(), total]:
        row.jobs = len(row._job_ids)
        row.busy_share = row._busy_s / row._sampled_s if row._sampled_s > 0 else None
    rows = sorted(groups.values(), key=lambda r: (r.project, r.key))
    return UsageReport(start=start, end=end, group_by=group_by, rows=rows, total=total)


CSV_COLUMNS = ["key", "project", "gpu_hours", "block_hours", "mig_hours", "gpu_equivalent_hours",
               "gpu_memory_gib_hours", "cpu_hours", "ram_gib_hours", "cost", "busy_share",
               "peak_memory_used_mib", "allocated_gpu_memory_mib", "jobs"]


def to_csv(report: UsageReport) -> str:
    """The report as CSV for finance: a header, one line per group, then the total."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["group_by", "start", "end", *CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in [*report.rows, report.total]:
        data = row.public()
        writer.writerow({"group_by": report.group_by, "start": report.start.isoformat(),
                         "end": report.end.isoformat(), **{c: "" if data[c] is None else data[c] for c in CSV_COLUMNS}})
    return out.getvalue()


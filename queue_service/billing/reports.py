"""Usage reports: ledger intervals clipped to a window, grouped, priced, beside measured use.

Every interval overlapping ``[start, end)`` counts for the part inside it;
a running interval counts up to "now" (the database clock), never beyond.
Grouping by ``day`` splits an interval at UTC midnights, so days add up to
the window's total exactly.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.orm import Session

from queue_service.billing import rollups
from queue_service.billing.ledger import db_now, gpu_equivalents
from queue_service.billing.pricebook import PriceBook
from queue_service.db.base import in_chunks
from queue_service.db.billing_models import GpuSample, UsageInterval, UsageJobDay
from queue_service.db.models import Allocation, ApiToken, Gpu, Job, Project
from queue_service.errors import InvalidRequest

__all__ = ["GROUP_BY", "LABEL_PREFIX", "NO_LABEL", "UsageReport", "UsageRow", "UsageTotals", "check_group_by",
           "clip", "label_value", "parse_month", "project_usage_totals", "to_csv", "usage", "usage_by_intervals"]

GROUP_BY = ("day", "job", "user", "gpu_model", "project", "workload")  # and "label:<key>"
LABEL_PREFIX = "label:"
NO_LABEL = "(none)"  # the group of jobs without the label key
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")  # the jobs API's label key rule


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
    workload: str = ""  # the group's workload class, when the group has one (group_by job or workload)
    labels: dict[str, str] = field(default_factory=dict)  # the labels the group shares (job: all; label:k: k)
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


def check_group_by(group_by: str, start: datetime, end: datetime) -> str | None:
    """Validate a report's grouping and window; returns the label key of ``label:<key>``, else None."""
    if group_by.startswith(LABEL_PREFIX):
        key = group_by[len(LABEL_PREFIX):]
        if not LABEL_KEY.match(key):
            raise InvalidRequest(f"group_by {group_by!r}: the label key must be a short identifier "
                                 "(a-z, 0-9, _ . -, up to 63 characters)", field="group_by")
        return key
    if group_by not in GROUP_BY:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY)} or label:<key>", field="group_by")
    if end <= start:
        raise InvalidRequest("end must be after start", field="end")
    return None


@lru_cache(maxsize=4096)
def _labels(labels_json: str) -> dict[str, str]:
    try:
        value = json.loads(labels_json or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def label_value(labels_json: str, key: str) -> str:
    """The value of label ``key`` in a canonical labels JSON, or ``(none)`` for a job without it."""
    value = _labels(labels_json).get(key)
    return NO_LABEL if value is None else str(value)


def _describe(group_by: str, label: str | None, key: str, workload: str, labels_json: str) -> dict:
    """What a group's CSV line says of workload and labels: known when the group is one job, class or label."""
    if group_by == "job":
        return {"workload": workload, "labels": dict(_labels(labels_json))}
    if group_by == "workload":
        return {"workload": key}
    if label is not None and key != NO_LABEL:
        return {"labels": {label: key}}
    return {}


def _ceil(t: datetime, floor: Callable[[datetime], datetime], step: timedelta) -> datetime:
    f = floor(t)
    return f if f == t else f + step


@dataclass(slots=True)
class UsageTotals:
    """A project's use in a window: GPU-equivalent hours (the quota unit) and cost (``project_usage_totals``)."""

    gpu_hours: float
    cost: float


def project_usage_totals(session: Session, project_id: str, start: datetime, end: datetime,
                         now: datetime | None = None) -> UsageTotals:
    """GPU-equivalent hours and cost of one project in ``[start, end)``, open intervals up to ``now``.

    Read from the rollups (plus the window's ragged ends and the open intervals, interval by interval), so
    it costs milliseconds over any ledger; the budget check calls it. Equal to ``usage(...).total``.
    """
    if end <= start:
        return UsageTotals(gpu_hours=0.0, cost=0.0)
    now = now or db_now(session)
    total = UsageRow(key="total")
    _Rolled(session, [project_id], start, end, now, lambda *_: ("total", "")).quantities({("total", ""): total})
    return UsageTotals(gpu_hours=total.gpu_equivalent_hours, cost=total.cost)


# A group key from the reporting dimensions: (project_id, owner, workload, labels_json, gpu_model, day) -> key, project
Keyer = Callable[[str, str, str, str, str, str], tuple[str, str]]


class _Rolled:
    """One rollup-based report: whole hours from ``usage_rollups``, the rest (ragged ends, open intervals) exact."""

    def __init__(self, session: Session, ids: list[str] | None, start: datetime, end: datetime, now: datetime,
                 keyer: Keyer, *, by_day: bool = False, by_model: bool = False, dims: Iterable[str] = ()) -> None:
        self.session, self.ids, self.start, self.end, self.now, self.keyer = session, ids, start, end, now, keyer
        self.by_day, self.by_model = by_day, by_model
        self.dims = set(dims)  # the rollup columns the report's key reads
        self.h0, self.h1 = _ceil(start, rollups.hour_floor, rollups.HOUR), rollups.hour_floor(end)
        self.d0, self.d1 = _ceil(start, rollups.day_floor, DAY), rollups.day_floor(end)
        self.prices: PriceBook | None = None

    def _where(self, column):
        return [] if self.ids is None else [column.in_(self.ids)]

    def _ends(self, lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
        """The parts of the window outside its whole buckets ``[lo, hi)``."""
        if lo >= hi:
            return [(self.start, self.end)]
        return [(a, b) for a, b in ((self.start, lo), (hi, self.end)) if a < b]

    def _open_and_ends(self, lo: datetime, hi: datetime, columns) -> list[tuple[Any, datetime, datetime]]:
        """(interval, a, b): the closed intervals' parts in the ragged ends, and the open intervals' whole parts."""
        out: list[tuple[Any, datetime, datetime]] = []
        for a, b in self._ends(lo, hi):
            for iv in self._closed_overlapping(a, b, columns):
                x, y = max(iv.started_at, a), min(iv.ended_at, b)
                if x < y:
                    out.append((iv, x, y))
        # The open intervals by the open-interval index alone, filtered here: with the project in the WHERE
        # SQLite walks the project's whole history instead (a few live allocations against a year of rows).
        wanted = None if self.ids is None else set(self.ids)
        for iv in self.session.execute(select(*columns).where(UsageInterval.ended_at.is_(None))):
            if wanted is not None and iv.project_id not in wanted:
                continue
            x, y = max(iv.started_at, self.start), min(self.now, self.end)
            if x < y:
                out.append((iv, x, y))
        return out

    def _closed_overlapping(self, a: datetime, b: datetime, columns) -> list[Any]:
        """The closed intervals overlapping ``[a, b)``, found by start time within a bounded range.

        Overlapping means started before b and ended after a. The start index alone would read the
        project's whole history before b, because an interval that started long ago may still cross a.
        Those that cross hour H = hour_floor(a), or start in it, are the intervals summed in H's rollup
        rows, and the rollups count them (``intervals``: one piece per interval and hour). So the scan
        walks back from H in widening steps until it has found that many, then stops: its cost is the
        age of the oldest interval crossing H, not the ledger's length. Exact as long as the rollups
        hold every closed interval, which the report's whole hours rely on anyway.
        """
        if self.ids is None:
            # No index starts with the start time alone, and all projects' counts would scan the rollups:
            # an all-projects report reads its ragged ends by a plain scan.
            return list(self.session.execute(select(*columns).where(
                UsageInterval.ended_at.is_not(None), UsageInterval.started_at < b, UsageInterval.ended_at > a)))
        hour = rollups.hour_floor(a)
        after = hour + rollups.HOUR
        r = rollups.rollup_rows().c
        expected = self.session.scalar(select(func.sum(r.intervals)).where(
            r.project_id.in_(self.ids), r.hour == hour)) or 0
        found = 0
        out: list[Any] = []
        low: datetime | None = hour - SCAN_FIRST
        high, width = max(b, after), SCAN_FIRST
        while True:
            bounds = [UsageInterval.started_at < high, *([] if low is None else [UsageInterval.started_at >= low])]
            for iv in self.session.execute(select(*columns).where(
                UsageInterval.project_id.in_(self.ids), *bounds, UsageInterval.ended_at > hour,
            )):
                if iv.started_at < after and iv.ended_at > iv.started_at:
                    found += 1  # one of the pieces H's rollups count
                if iv.started_at < b and iv.ended_at > a:
                    out.append(iv)
            if found >= expected or low is None:
                return out
            high, width = low, width * 2
            low = low - width if width <= SCAN_LAST else None  # then the rest of the history, in one read

    def quantities(self, groups: dict[tuple[str, str], UsageRow], describe: Callable | None = None) -> None:
        """Resource-hours and cost per group (created on first use) and in ``groups[("total", "")]`` if there."""
        total = groups.get(("total", ""))
        r = rollups.rollup_rows().c  # the summed rows and the deltas not folded yet, in one statement
        if self.h0 < self.h1:
            # Grouped in SQL by only what the report groups by (the rest summed there, not here).
            dims = [getattr(r, name) if name in self.dims else literal("") for name in
                    ("project_id", "owner_token_id", "workload", "labels_json", "gpu_model")]
            hour = r.hour if self.by_day else literal(None)
            grouped = [getattr(r, name) for name in ("project_id", "owner_token_id", "workload", "labels_json",
                                                     "gpu_model") if name in self.dims]
            sums = [func.sum(getattr(r, name)) for name in rollups.QUANTITIES]
            for row in self.session.execute(
                select(*dims, hour, *sums, func.max(r.max_gpu_memory_mib), func.sum(r.intervals))
                .where(*self._where(r.project_id), r.hour >= self.h0, r.hour < self.h1)
                .group_by(*grouped, *([r.hour] if self.by_day else []))
            ):
                if not row[15]:
                    continue  # no rollup row in the window (an aggregate without GROUP BY answers one row)
                key = self.keyer(row[0], row[1], row[2], row[3], row[4], row[5].date().isoformat() if row[5] else "")
                values = dict(zip(rollups.QUANTITIES, row[6:14], strict=True))
                for target in self._targets(groups, key, total, describe, row[2], row[3]):
                    _add_seconds(target, values, row[14] or 0)
        self.prices = self.prices or PriceBook.load(self.session)
        for iv, a, b in self._open_and_ends(self.h0, self.h1, INTERVAL_COLUMNS):
            for x, y in _day_cuts(a, b):
                key = self.keyer(iv.project_id, iv.owner_token_id or "", iv.workload, iv.labels_json,
                                 iv.gpu_model or "", x.date().isoformat())
                values = rollups.piece(iv, x, y, self.prices)
                for target in self._targets(groups, key, total, describe, iv.workload, iv.labels_json):
                    _add_seconds(target, values, iv.gpu_memory_mib)

    def _counted_jobs(self) -> tuple[dict[tuple[str, str], int], int]:
        """Distinct jobs of the whole days per group and in all, from ``usage_job_counts`` (not by GPU model).

        A job's project, owner, workload and labels never change, so a group's distinct jobs are its rows'
        jobs whose previous day is before the window (by day: every row of the day, one per job).
        """
        c = rollups.job_count_rows().c
        window = [*self._where(c.project_id), c.day >= self.d0, c.day < self.d1]
        first = c.prev_day < self.d0  # the job's first day in the window
        names = ("project_id", "owner_token_id", "workload", "labels_json")
        dims = [getattr(c, n) if n in self.dims else literal("") for n in names]
        grouped = [getattr(c, n) for n in names if n in self.dims] + ([c.day] if self.by_day else [])
        per_group: dict[tuple[str, str], int] = defaultdict(int)
        for row in self.session.execute(
            select(*dims, c.day if self.by_day else literal(None), func.sum(c.jobs))
            .where(*window, *([] if self.by_day else [first])).group_by(*grouped)
        ):
            if row[5]:
                per_group[self.keyer(*row[:4], "", row[4].date().isoformat() if row[4] else "")] += row[5]
        return per_group, self.session.scalar(select(func.sum(c.jobs)).where(*window, first)) or 0

    @staticmethod
    def _targets(groups, key, total, describe, workload, labels_json) -> list[UsageRow]:
        row = groups.get(key)
        if row is None:
            row = groups[key] = UsageRow(key=key[0], project=key[1], **(describe(key[0], workload, labels_json)
                                                                          if describe else {}))
        return [row] if total is None or row is total else [row, total]

    def jobs(self, groups: dict[tuple[str, str], UsageRow], total: UsageRow) -> None:
        """Distinct jobs per group and in the total: job-days for whole days, intervals for the rest."""
        d = UsageJobDay
        per_group: dict[tuple[str, str], int] = defaultdict(int)
        total_jobs = 0
        whole = self.d0 < self.d1
        window = [*self._where(d.project_id), d.day >= self.d0, d.day < self.d1]
        if whole and not self.by_model:
            per_group, total_jobs = self._counted_jobs()
        elif whole:
            # A job's project, owner, workload and labels never change; its days and GPU models may, so they
            # are grouped on only when the report groups by them (else a job would count once per day).
            # Grouped by only what the key reads: a job has one project, owner, workload and labels, so
            # distinct counts per such group are exact; days and models are grouped on when the key reads them.
            names = ("project_id", "owner_token_id", "workload", "labels_json", "gpu_model")
            wanted = self.dims | ({"gpu_model"} if self.by_model else set())
            dims = [getattr(d, n) if n in wanted else literal("") for n in names]
            day = d.day if self.by_day else literal(None)
            grouped = [getattr(d, n) for n in names if n in wanted] + ([d.day] if self.by_day else [])
            for row in self.session.execute(
                select(*dims, day, func.count(func.distinct(d.job_id))).where(*window).group_by(*grouped)
            ):
                if not row[6]:
                    continue
                per_group[self.keyer(*row[:5], row[5].date().isoformat() if row[5] else "")] += row[6]
            total_jobs = self.session.scalar(select(func.count(func.distinct(d.job_id))).where(*window)) or 0
        # The rest: jobs seen only in the ragged days or in open intervals, unless a whole day counted them.
        extra_pairs: set[tuple[tuple[str, str], str]] = set()
        extra_jobs: set[str] = set()
        for iv, a, b in self._open_and_ends(self.d0, self.d1, JOB_COLUMNS):
            for x, _y in _day_cuts(a, b):
                key = self.keyer(iv.project_id, iv.owner_token_id or "", iv.workload, iv.labels_json,
                                 iv.gpu_model or "", x.date().isoformat())
                extra_pairs.add((key, iv.job_id))
                extra_jobs.add(iv.job_id)
        if extra_jobs and whole:
            listed = sorted(extra_jobs)
            projects = None if self.ids is None else set(self.ids)
            for chunk in in_chunks(listed):
                # By the job index, the project filtered here: with the project in the WHERE, SQLite reads the
                # project's every job-day of the window (the unique key's range) once per chunk instead.
                for seen in self.session.execute(
                    select(d.project_id, d.owner_token_id, d.workload, d.labels_json, d.gpu_model, d.day, d.job_id)
                    .where(d.job_id.in_(chunk), d.day >= self.d0, d.day < self.d1)
                ):
                    if projects is not None and seen[0] not in projects:
                        continue
                    extra_pairs.discard((self.keyer(*seen[:5], seen[5].date().isoformat()), seen[6]))
                    extra_jobs.discard(seen[6])
        for key, _job in extra_pairs:
            per_group[key] += 1
        for key, count in per_group.items():
            if key in groups:
                groups[key].jobs = count
        total.jobs = total_jobs + len(extra_jobs)


INTERVAL_COLUMNS = tuple(getattr(UsageInterval, c) for c in (
    "job_id", "project_id", "project_name", "owner_token_id", "workload", "labels_json", "kind", "gpu_model",
    "gpus", "blocks", "gpu_memory_mib", "mig_profile", "mig_compute_share", "cpus_milli", "memory_mib",
    "started_at", "ended_at"))
JOB_COLUMNS = tuple(getattr(UsageInterval, c) for c in (
    "job_id", "project_id", "owner_token_id", "workload", "labels_json", "gpu_model", "started_at", "ended_at"))
DAY = timedelta(days=1)
SCAN_FIRST = timedelta(hours=2)  # the first step back from a ragged end's hour (the second doubles it)
SCAN_LAST = timedelta(days=366)  # steps widen to this, then one read takes everything older


def _add_seconds(row: UsageRow, values: dict[str, float], gpu_memory_mib: int) -> None:
    row.gpu_hours += values["gpu_seconds"] / 3600
    row.block_hours += values["block_seconds"] / 3600
    row.mig_hours += values["mig_seconds"] / 3600
    row.gpu_equivalent_hours += values["gpu_equivalent_seconds"] / 3600
    row.gpu_memory_gib_hours += values["gpu_memory_gib_seconds"] / 3600
    row.cpu_hours += values["cpu_seconds"] / 3600
    row.ram_gib_hours += values["ram_gib_seconds"] / 3600
    row.cost += values["cost"]
    row.allocated_gpu_memory_mib = max(row.allocated_gpu_memory_mib, gpu_memory_mib)


def usage(
    session: Session,
    *,
    project_ids: Iterable[str] | None,
    start: datetime,
    end: datetime,
    group_by: str = "day",
    now: datetime | None = None,
) -> UsageReport:
    """Usage of the given projects (None: all) in ``[start, end)``, grouped, priced and measured.

    Whole UTC hours of closed intervals come from the rollups; the window's ragged ends and every open
    interval (up to ``now``) are computed interval by interval, so the figures are exact to the second and
    equal to ``usage_by_intervals`` (tested). ``group_by``: day, job, user, gpu_model, project, workload,
    or ``label:<key>`` (jobs without the key form the group ``(none)``).
    """
    label = check_group_by(group_by, start, end)
    if group_by == "job":
        return usage_by_intervals(session, project_ids=project_ids, start=start, end=end, group_by=group_by,
                                  now=now)
    now = now or db_now(session)
    ids = None if project_ids is None else sorted(set(project_ids))
    users = dict(session.execute(select(ApiToken.id, ApiToken.name)).all())
    names = dict(session.execute(select(Project.id, Project.name)).all())

    def keyer(project_id: str, owner: str, workload: str, labels_json: str, model: str, day: str) -> tuple[str, str]:
        if label is not None:
            return label_value(labels_json, label), ""
        if group_by == "project":
            name = names.get(project_id, project_id)
            return name, name
        return {"day": day, "user": users.get(owner, owner or "-") or "-", "gpu_model": model or "none",
                "workload": workload}[group_by], ""

    total = UsageRow(key="total")
    groups: dict[tuple[str, str], UsageRow] = {}
    dims = {"project": ["project_id"], "user": ["owner_token_id"], "workload": ["workload"],
            "gpu_model": ["gpu_model"]}.get(group_by, ["labels_json"] if label is not None else [])
    rolled = _Rolled(session, ids, start, end, now, keyer, by_day=group_by == "day",
                     by_model=group_by == "gpu_model", dims=dims)
    rolled.quantities(groups, lambda key, workload, labels_json: _describe(group_by, label, key, workload,
                                                                           labels_json))
    for row in groups.values():
        for name in ("gpu_hours", "block_hours", "mig_hours", "gpu_equivalent_hours", "gpu_memory_gib_hours",
                     "cpu_hours", "ram_gib_hours", "cost"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        total.allocated_gpu_memory_mib = max(total.allocated_gpu_memory_mib, row.allocated_gpu_memory_mib)
    rolled.jobs(groups, total)
    _measured(session, ids, start, end, group_by, label, users, names, groups, total)
    for row in [*groups.values(), total]:
        row.busy_share = row._busy_s / row._sampled_s if row._sampled_s > 0 else None
    rows = sorted(groups.values(), key=lambda r: (r.project, r.key))
    return UsageReport(start=start, end=end, group_by=group_by, rows=rows, total=total)


def _measured(session: Session, ids: list[str] | None, start: datetime, end: datetime, group_by: str,
              label: str | None, users: dict, names: dict, groups: dict[tuple[str, str], UsageRow],
              total: UsageRow) -> None:
    """Samples of the window, summed in SQL by what the grouping needs (a day, a project, a GPU, a job)."""
    s = GpuSample
    where = [s.at >= start, s.at < end, *([] if ids is None else [s.project_id.in_(ids)])]
    sampled = func.sum(case((s.sm_percent.is_not(None), s.window_s), else_=0.0))
    busy = func.sum(case((s.sm_percent.is_not(None), s.window_s * s.sm_percent / 100), else_=0.0))
    peak = func.max(s.memory_used_mib)
    if group_by == "day":
        dim: Any = func.date(s.at)
    elif group_by == "project":
        dim = s.project_id
    elif group_by == "gpu_model":
        dim = s.gpu_uuid
    else:
        dim = s.job_id
    rows = session.execute(select(dim, sampled, busy, peak).where(*where).group_by(dim)).all()
    if not rows:
        return
    if group_by == "gpu_model":
        models = _device_models(session)
        keys = {uuid: ((models.get(uuid) or "none"), "") for uuid, *_ in rows}
    elif group_by in ("user", "workload") or label is not None:
        jobs = {r[0] for r in rows}
        info = {j: (o or "", w, lab) for j, o, w, lab in session.execute(
            select(Job.id, Job.owner_token_id, Job.workload, Job.labels).where(Job.id.in_(jobs)))}
        keys = {}
        for job_id in jobs:
            owner, workload, labels = info.get(job_id, ("", "", {}))
            if label is not None:
                value = (labels or {}).get(label)
                keys[job_id] = (NO_LABEL if value is None else str(value), "")
            elif group_by == "user":
                keys[job_id] = (users.get(owner, owner or "-") or "-", "")
            else:
                keys[job_id] = (workload, "")
    elif group_by == "project":
        keys = {pid: (names.get(pid, pid), names.get(pid, pid)) for pid, *_ in rows}
    else:
        keys = {d: (str(d)[:10], "") for d, *_ in rows}
    for dim_value, sampled_s, busy_s, peak_mib in rows:
        for row in (t for t in (groups.get(keys.get(dim_value, ("", ""))), total) if t is not None):
            row.peak_memory_used_mib = max(row.peak_memory_used_mib, peak_mib or 0)
            row._sampled_s += sampled_s or 0.0
            row._busy_s += busy_s or 0.0


def _device_models(session: Session) -> dict[str | None, str]:
    """GPU and MIG device UUIDs -> GPU model."""
    models: dict[str | None, str] = {}
    for uuid, model in [*session.execute(select(Gpu.uuid, Gpu.model)), *session.execute(
        select(Allocation.mig_uuid, Gpu.model).join(Gpu, Gpu.uuid == Allocation.gpu_uuid)
        .where(Allocation.mig_uuid.is_not(None))
    )]:
        models[uuid] = model
    return models

def usage_by_intervals(
    session: Session,
    *,
    project_ids: Iterable[str] | None,
    start: datetime,
    end: datetime,
    group_by: str = "day",
    now: datetime | None = None,
) -> UsageReport:
    """The reference report: every interval overlapping the window, clipped, split and priced one by one.

    Kept as the oracle the rollup-based ``usage`` is tested against (and the benchmark's baseline), and
    used for ``group_by=job`` (a per-job report is as long as its intervals anyway).
    """
    label = check_group_by(group_by, start, end)
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

    workloads: dict[str, tuple[str, str]] = {}  # job -> (workload, labels_json)

    def key_of(project: str, job_id: str, owner: str | None, model: str | None, day: str) -> str:
        if label is not None:
            return label_value(workloads[job_id][1], label)
        if group_by == "workload":
            return workloads[job_id][0]
        return {"day": day, "job": job_id, "user": users.get(owner or "", owner or "-") or "-",
                "gpu_model": model or "none", "project": project}[group_by]

    job_info: dict[str, tuple[str, str | None]] = {}
    for iv in intervals:
        a, b = clip(iv, start, end, now)
        job_info[iv.job_id] = (iv.project_name, iv.owner_token_id)
        workloads[iv.job_id] = (iv.workload, iv.labels_json)
        if b <= a:
            continue
        for da, db in _day_cuts(a, b) if group_by == "day" else [(a, b)]:
            key = key_of(iv.project_name, iv.job_id, iv.owner_token_id, iv.gpu_model, da.date().isoformat())
            project = iv.project_name if group_by in ("job", "project") else ""
            row = groups.get((key, project))
            if row is None:
                row = groups[(key, project)] = UsageRow(key=key, project=project, **_describe(
                    group_by, label, key, iv.workload, iv.labels_json))
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
               "peak_memory_used_mib", "allocated_gpu_memory_mib", "jobs", "workload", "labels"]


def to_csv(report: UsageReport) -> str:
    """The report as CSV for finance: a header, one line per group, then the total."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["group_by", "start", "end", *CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in [*report.rows, report.total]:
        data = row.public()
        writer.writerow({"group_by": report.group_by, "start": report.start.isoformat(),
                         "end": report.end.isoformat(), **{c: _cell(data[c]) for c in CSV_COLUMNS}})
    return out.getvalue()



def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else ""
    return value

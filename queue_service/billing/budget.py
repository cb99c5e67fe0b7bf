"""Monthly budgets: what a project may use per calendar month (UTC), read from the ledger.

A budget is an amount per month in one unit — ``gpu_hours`` (whole-GPU
equivalent hours, ``admission.units``, as quotas and the usage report
count them) or ``cost`` (the price catalogue's currency) — and a mode:

- ``hard``: once the month's use reaches the amount, the project's queued
  jobs wait with the reason "budget for 2026-12 exhausted: 412 of 400 GPU-h"
  (``hold_back``, each admission cycle); on the 1st the month is new, its
  use starts at 0 and they run. Running jobs are never stopped for it.
- ``approval``: a job whose own estimate (GPU-equivalents × time limit,
  priced at the dearest current GPU-hour for ``cost``) would take the month
  past the amount is submitted ``pending_approval`` (``over_budget``); a
  job with no time limit cannot be estimated and asks whenever the project
  has a budget in this mode.

The month's use is ``reports.project_usage_totals`` over the month (the
hourly rollups, so a check costs milliseconds whatever the ledger holds),
open intervals up to "now" by the database clock (``db.clock.db_now``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.billing import reports
from queue_service.billing.prices import PriceBook
from queue_service.db.approval_models import ProjectBudget
from queue_service.db.billing_models import GpuPrice
from queue_service.db.clock import db_now

UNITS = ("gpu_hours", "cost")
MODES = ("hard", "approval")
_LABEL = {"gpu_hours": "GPU-h", "cost": "cost"}


@dataclass(frozen=True, slots=True)
class Standing:
    """A project's budget against its use in one month."""

    month: str  # "2026-12"
    amount: float
    used: float
    unit: str
    mode: str

    @property
    def exhausted(self) -> bool:
        return self.used >= self.amount

    def words(self) -> str:
        """"budget for 2026-12 exhausted: 412 of 400 GPU-h" (or "... 12.5 of 400 GPU-h used")."""
        state = "exhausted" if self.exhausted else "used"
        return f"budget for {self.month} {state}: {_num(self.used)} of {_num(self.amount)} {_LABEL[self.unit]}"


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 or value >= 100 else f"{value:.1f}"


def month_of(at: datetime) -> str:
    return at.strftime("%Y-%m")


def used(session: Session, *, project_id: str, month: str, unit: str, now: datetime) -> float:
    """The project's use in ``month`` so far (open intervals count up to ``now``)."""
    start, end = reports.parse_month(month)
    if now <= start:
        return 0.0
    total = reports.project_usage_totals(session, project_id, start, end, now=now)
    return total.cost if unit == "cost" else total.gpu_hours


def standing(session: Session, *, project_id: str, now: datetime | None = None) -> Standing | None:
    """The project's budget this month, or None without one."""
    row = session.get(ProjectBudget, project_id)
    if row is None:
        return None
    now = now or db_now(session)
    month = month_of(now)
    return Standing(month=month, amount=row.amount, used=used(session, project_id=project_id, month=month,
                                                               unit=row.unit, now=now),
                    unit=row.unit, mode=row.mode)


class _OfProject(Protocol):
    """A queued job as the budget rule reads it: its project (a ``Job``, or the cycle's ``QueuedJob``)."""

    @property
    def project_id(self) -> str: ...


def hold_back(session: Session, *, queued: Mapping[str, _OfProject], now: datetime | None = None) -> dict[str, str]:
    """Queued jobs of projects whose ``hard`` budget is exhausted this month, with the reason."""
    project_ids = sorted({j.project_id for j in queued.values()})
    if not project_ids:
        return {}
    hard = list(session.scalars(select(ProjectBudget).where(ProjectBudget.project_id.in_(project_ids),
                                                             ProjectBudget.mode == "hard")))
    if not hard:
        return {}
    now = now or db_now(session)
    month = month_of(now)
    spent: dict[str, str] = {}
    for row in hard:
        mine = Standing(month=month, amount=row.amount, unit=row.unit, mode=row.mode,
                        used=used(session, project_id=row.project_id, month=month, unit=row.unit, now=now))
        if mine.exhausted:
            spent[row.project_id] = mine.words()
    return {job_id: spent[j.project_id] for job_id, j in queued.items() if j.project_id in spent}


def estimate(session: Session, *, gpu_equivalents: float, time_limit_s: int | None, unit: str,
             now: datetime) -> float | None:
    """What a job may use at most, in ``unit``; None when it has no time limit (unbounded)."""
    if time_limit_s is None:
        return None
    gpu_hours = gpu_equivalents * time_limit_s / 3600
    if unit != "cost":
        return gpu_hours
    book = PriceBook.load(session)
    models = set(session.scalars(select(GpuPrice.gpu_model)))
    dearest = max((p.gpu_hour for p in (book.at(m, now) for m in models) if p is not None), default=0.0)
    return gpu_hours * dearest


def over_budget(session: Session, *, project_id: str, gpu_equivalents: float, time_limit_s: int | None,
                now: datetime | None = None) -> str:
    """Why a new job needs approval under the project's ``approval`` budget ("" when it does not)."""
    row = session.get(ProjectBudget, project_id)
    if row is None or row.mode != "approval":
        return ""
    now = now or db_now(session)
    mine = Standing(month=month_of(now), amount=row.amount, unit=row.unit, mode=row.mode,
                    used=used(session, project_id=project_id, month=month_of(now), unit=row.unit, now=now))
    most = estimate(session, gpu_equivalents=gpu_equivalents, time_limit_s=time_limit_s, unit=row.unit, now=now)
    if most is None:
        if gpu_equivalents <= 0:
            return ""
        return f"{mine.words()}; a job without a time limit cannot be held to it"
    if mine.used + most > mine.amount:
        return f"{mine.words()}; this job may use up to {_num(most)} {_LABEL[row.unit]} more"
    return ""

"""The price catalogue: effective-dated price lists per GPU model, and what an interval costs.

A price list applies from its ``effective_from`` until the next list of the
same model. Lists are only added, never edited, and never take effect in
the past (``set_price`` refuses it), so the cost of a closed period is
fixed the moment it closes: last month's bill never changes.

Cost per hour of one interval, by what it holds:

- ``gpu``: gpus × gpu_hour (its memory is included);
- ``mig``: the profile's own price, else its compute share × gpu_hour;
- ``blocks``: blocks × block_hour (default gpu_hour / 100)
  + GPU memory GiB × gpu_memory_gib_hour (default 0);
- every kind: CPUs × cpu_hour + RAM GiB × ram_gib_hour (default 0), from
  the model's list, else the ``*`` list (nodes without GPUs use ``*``).
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.types import BLOCKS_PER_GPU
from queue_service.auth import Principal
from queue_service.billing.ledger import db_now
from queue_service.db.billing_models import GpuPrice, UsageInterval
from queue_service.errors import InvalidRequest
from queue_service.services import audit
from queue_service.services.convert import model_key

__all__ = ["ANY_MODEL", "PriceBook", "price_dict", "set_price"]

ANY_MODEL = "*"
# A few seconds of slack: the admin's "now" left their machine a moment ago.
PAST_SLACK = timedelta(seconds=5)


def price_dict(row: GpuPrice) -> dict:
    """A price row as plain data (for audit rows and the API)."""
    return {
        "gpu_model": row.gpu_model, "effective_from": row.effective_from.isoformat(), "gpu_hour": row.gpu_hour,
        "block_hour": row.block_hour, "gpu_memory_gib_hour": row.gpu_memory_gib_hour,
        "mig_profile_hour": dict(row.mig_profile_hour or {}), "cpu_hour": row.cpu_hour,
        "ram_gib_hour": row.ram_gib_hour,
    }


def set_price(
    session: Session,
    *,
    gpu_model: str,
    gpu_hour: float,
    actor: Principal | str,
    effective_from: datetime | None = None,
    block_hour: float | None = None,
    gpu_memory_gib_hour: float | None = None,
    mig_profile_hour: dict[str, float] | None = None,
    cpu_hour: float | None = None,
    ram_gib_hour: float | None = None,
    note: str = "",
) -> GpuPrice:
    """Add a price list effective from ``effective_from`` (default: now); audited in the same transaction."""
    now = db_now(session)
    start = effective_from or now
    if start < now - PAST_SLACK:
        raise InvalidRequest("prices cannot take effect in the past (closed periods keep their prices)",
                             field="effective_from")
    key = gpu_model if gpu_model == ANY_MODEL else model_key(gpu_model)
    before = session.scalar(
        select(GpuPrice).where(GpuPrice.gpu_model == key, GpuPrice.effective_from <= start)
        .order_by(GpuPrice.effective_from.desc(), GpuPrice.id.desc()).limit(1)
    )
    row = GpuPrice(
        gpu_model=key, effective_from=max(start, now),
        gpu_hour=gpu_hour, block_hour=block_hour, gpu_memory_gib_hour=gpu_memory_gib_hour,
        mig_profile_hour={k.lower(): v for k, v in (mig_profile_hour or {}).items()}, cpu_hour=cpu_hour,
        ram_gib_hour=ram_gib_hour, created_by=actor.label if isinstance(actor, Principal) else actor, note=note,
    )
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="price.set", target=key, reason=note,
                 before=price_dict(before) if before is not None else None, after=price_dict(row))
    return row


class PriceBook:
    """Every price list, loaded once per report; answers the cost of an interval over a window."""

    def __init__(self, rows: list[GpuPrice]) -> None:
        self._lists: dict[str, list[GpuPrice]] = {}
        for row in sorted(rows, key=lambda r: (r.effective_from, r.id)):
            self._lists.setdefault(row.gpu_model, []).append(row)
        self._starts = {m: [r.effective_from for r in rows] for m, rows in self._lists.items()}

    @classmethod
    def load(cls, session: Session) -> PriceBook:
        return cls(list(session.scalars(select(GpuPrice))))

    def at(self, model: str, moment: datetime) -> GpuPrice | None:
        """The list in force for ``model`` at ``moment``, or None."""
        starts = self._starts.get(model)
        if not starts:
            return None
        i = bisect.bisect_right(starts, moment) - 1
        return self._lists[model][i] if i >= 0 else None

    def _changes(self, model: str, start: datetime, end: datetime) -> list[datetime]:
        return [s for s in self._starts.get(model, []) if start < s < end]

    def hourly(self, row: UsageInterval, moment: datetime) -> float:
        """What ``row`` costs per hour under the lists in force at ``moment``."""
        model = row.gpu_model or ANY_MODEL
        own = self.at(model, moment)
        fallback = self.at(ANY_MODEL, moment)
        cost = 0.0
        if own is not None:
            if row.kind == "gpu":
                cost += row.gpus * own.gpu_hour
            elif row.kind == "mig":
                profile_price = (own.mig_profile_hour or {}).get((row.mig_profile or "").lower())
                cost += profile_price if profile_price is not None else row.mig_compute_share * own.gpu_hour
            elif row.kind == "blocks":
                block = own.block_hour if own.block_hour is not None else own.gpu_hour / BLOCKS_PER_GPU
                share = row.mig_compute_share if row.mig_profile else 1.0  # blocks of a shared MIG instance
                cost += row.blocks * block * share + row.gpu_memory_mib / 1024 * (own.gpu_memory_gib_hour or 0.0)
        cpu = (own.cpu_hour if own is not None and own.cpu_hour is not None
               else (fallback.cpu_hour if fallback else None))
        ram = (own.ram_gib_hour if own is not None and own.ram_gib_hour is not None
               else (fallback.ram_gib_hour if fallback else None))
        cost += row.cpus_milli / 1000 * (cpu or 0.0) + row.memory_mib / 1024 * (ram or 0.0)
        return cost

    def cost(self, row: UsageInterval, start: datetime, end: datetime) -> float:
        """The cost of ``row`` held from ``start`` to ``end``, split where a price list changes."""
        if end <= start:
            return 0.0
        cuts = sorted({start, end, *self._changes(row.gpu_model or ANY_MODEL, start, end),
                       *self._changes(ANY_MODEL, start, end)})
        total = 0.0
        for a, b in pairwise(cuts):
            total += self.hourly(row, a) * (b - a).total_seconds() / 3600
        return total

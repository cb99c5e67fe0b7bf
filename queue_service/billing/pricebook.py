"""The price catalogue as loaded for one report or one close: the list in force at a moment, and costs.

Its own module, free of the service layer (audit, conversions), because the
ledger (and so the lifecycle, which closes intervals) prices rollups with it.
The pricing rules are documented in ``billing.prices``.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.types import BLOCKS_PER_GPU
from queue_service.db.billing_models import GpuPrice, UsageInterval

__all__ = ["ANY_MODEL", "PriceBook"]

ANY_MODEL = "*"


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
        starts = self._starts.get(model, [])
        return starts[bisect.bisect_right(starts, start):bisect.bisect_left(starts, end)]

    def changes(self, row: UsageInterval, start: datetime, end: datetime) -> bool:
        """Whether a list that prices ``row`` (its model's, or ``*``) changes strictly inside ``(start, end)``."""
        return bool(self._changes(row.gpu_model or ANY_MODEL, start, end) or self._changes(ANY_MODEL, start, end))

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

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

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.billing.pricebook import ANY_MODEL, PriceBook
from queue_service.db.billing_models import GpuPrice
from queue_service.db.clock import db_now
from queue_service.errors import InvalidRequest
from queue_service.services import audit
from queue_service.services.convert import model_key

__all__ = ["ANY_MODEL", "PriceBook", "price_dict", "set_price"]

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

"""/v1/prices: the effective-dated price catalogue. Anyone signed in reads it; admins add to it."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from queue_service.api.deps import CurrentPrincipal, SessionDep
from queue_service.api.routes.usage import _naive_utc
from queue_service.api.schemas.usage import PriceCreate, PricePublic
from queue_service.billing import prices as price_service
from queue_service.db.billing_models import GpuPrice
from queue_service.db.models import Role

router = APIRouter(prefix="/prices", tags=["prices"])


@router.get("", response_model=list[PricePublic])
def list_prices(_principal: CurrentPrincipal, session: SessionDep) -> list[PricePublic]:
    """Every price list ever set, oldest first (history included: it is what past bills used)."""
    rows = session.scalars(select(GpuPrice).order_by(GpuPrice.gpu_model, GpuPrice.effective_from, GpuPrice.id))
    return [PricePublic.model_validate(r, from_attributes=True) for r in rows]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PricePublic)
def set_price(body: PriceCreate, principal: CurrentPrincipal, session: SessionDep) -> PricePublic:
    """Admins add a price list, effective now or later (never earlier); audited."""
    principal.require(Role.ADMIN)
    row = price_service.set_price(
        session, gpu_model=body.gpu_model, gpu_hour=body.gpu_hour, actor=principal,
        effective_from=_naive_utc(body.effective_from), block_hour=body.block_hour,
        gpu_memory_gib_hour=body.gpu_memory_gib_hour, mig_profile_hour=body.mig_profile_hour,
        cpu_hour=body.cpu_hour, ram_gib_hour=body.ram_gib_hour, note=body.note,
    )
    return PricePublic.model_validate(row, from_attributes=True)

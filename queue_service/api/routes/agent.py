"""/v1/agent: what node agents call (role ``agent``): register, heartbeat, claim, exit, logs."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter
from pydantic import BaseModel, Field

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.errors import InvalidRequest
from queue_service.services import nodes as node_service
from queue_service.services import reports
from workers.messages import NodeInventory

router = APIRouter(prefix="/agent", tags=["agent"])


class RegisterBody(BaseModel):
    inventory: dict


class HeartbeatBody(BaseModel):
    node_name: str = Field(max_length=128)


class AttemptRef(BaseModel):
    node_name: str = Field(max_length=128)
    job_id: str = Field(max_length=32)
    attempt: int = Field(ge=1)
    replica: int = Field(default=0, ge=0)


class ExitBody(AttemptRef):
    exit_code: int | None = None
    reason: str = Field(max_length=32)
    message: str = Field(default="", max_length=4000)


class LogBody(AttemptRef):
    stream: str = Field(pattern=r"^(stdout|stderr)$")
    offset: int = Field(ge=0)
    data_b64: str


@router.post("/register")
def register(body: RegisterBody, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    try:
        inventory = NodeInventory.from_dict(body.inventory)
    except TypeError as exc:
        raise InvalidRequest(f"bad inventory: {exc}", field="inventory") from exc
    node_service.check_agent(principal, inventory.node_name)
    node = node_service.register(session, inventory=inventory, lease_s=ctx.settings.node_lease_s)
    session.commit()
    ctx.admitter.wake()
    return {"node_id": node.id, "lease_s": ctx.settings.node_lease_s}


@router.post("/heartbeat")
def heartbeat(body: HeartbeatBody, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    node_service.check_agent(principal, body.node_name)
    node = node_service.heartbeat(session, node_name=body.node_name, lease_s=ctx.settings.node_lease_s)
    return {"known": node is not None, "lease_s": ctx.settings.node_lease_s}


@router.post("/started")
def started(body: AttemptRef, principal: CurrentPrincipal, session: SessionDep) -> dict:
    """The start claim: 200 means start it, 409 means do not (stale or cancelled)."""
    node_service.check_agent(principal, body.node_name)
    job = reports.claim_start(session, job_id=body.job_id, attempt=body.attempt, node_name=body.node_name,
                              replica=body.replica)
    return {"state": job.state}


@router.post("/exited")
def exited(body: ExitBody, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    node_service.check_agent(principal, body.node_name)
    outcome = reports.report_exit(
        session, job_id=body.job_id, attempt=body.attempt, node_name=body.node_name, replica=body.replica,
        exit_code=body.exit_code, reason=body.reason, message=body.message, grace_s=ctx.settings.default_grace_s,
    )
    state = outcome.job.state
    session.commit()
    for stop in outcome.stops:
        ctx.dispatcher.stop(stop)
    if outcome.finalized:
        ctx.admitter.wake()  # the capacity is free now: admit the next job at once
    return {"state": state, "finalized": outcome.finalized}


@router.post("/logs")
def logs(body: LogBody, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    node_service.check_agent(principal, body.node_name)
    try:
        data = base64.b64decode(body.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("data_b64 is not base64", field="data_b64") from exc
    end = reports.append_logs(
        session, job_id=body.job_id, attempt=body.attempt,
        stream=body.stream if body.replica == 0 else f"{body.stream}.{body.replica}",
        offset=body.offset, data=data, max_bytes=ctx.settings.max_log_bytes,
        node_name=body.node_name, replica=body.replica,
    )
    return {"end": end}

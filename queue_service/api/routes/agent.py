"""/v1/agent: what node agents call (role ``agent``): register, heartbeat, adopt, claim, exit, logs.

- ``register``: the node's inventory; the answer carries the lease and the
  heartbeat interval the agent must keep (self-fencing is derived from them).
- ``heartbeat``: extends the lease (database clock) and lists, of the
  attempts the agent says it runs, the ``stale`` ones it must stop.
- ``adopt``: after an agent (re)start, the attempts its runtimes still hold;
  the answer says which to ``keep`` supervising (with their launch spec) and
  which to ``stop``. Attempts the database places on the node that the agent
  did not bring back are lost (requeued) if they had started, re-sent if not.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep

from queue_service.db.models import Allocation, Job, JobState, Node
from queue_service.errors import InvalidRequest
from queue_service.recovery import lose_attempt
from queue_service.services import nodes as node_service
from queue_service.services import reports
from workers.messages import LaunchSpec, NodeInventory
from workers.runtime.base import ExitReason

router = APIRouter(prefix="/agent", tags=["agent"])


class RegisterBody(BaseModel):
    inventory: dict


class AttemptKey(BaseModel):
    job_id: str = Field(max_length=32)
    attempt: int = Field(ge=1)
    replica: int = Field(default=0, ge=0)


class HeartbeatBody(BaseModel):
    node_name: str = Field(max_length=128)
    running: list[AttemptKey] | None = Field(default=None, max_length=4096)  # None: an agent that does not say


class AdoptBody(BaseModel):
    node_name: str = Field(max_length=128)
    attempts: list[AttemptKey] = Field(default_factory=list, max_length=4096)


class AttemptRef(AttemptKey):
    node_name: str = Field(max_length=128)


class ExitBody(AttemptRef):
    exit_code: int | None = None
    reason: ExitReason  # a typo in an agent must not turn into "failed with code None"
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
    ctx.feasibility.invalidate()  # the cluster changed: "never fits" answers may too
    ctx.admitter.wake()
    return {"node_id": node.id, "lease_s": ctx.settings.node_lease_s,
            "heartbeat_s": ctx.settings.heartbeat_interval_s}


def _key(k: AttemptKey) -> node_service.AttemptKey:
    return (k.job_id, k.attempt, k.replica)


def _ref(key: node_service.AttemptKey) -> dict:
    return {"job_id": key[0], "attempt": key[1], "replica": key[2]}


@router.post("/heartbeat")
def heartbeat(body: HeartbeatBody, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    """Extend the lease; ``stale``: attempts the agent runs that the database no longer places there."""
    node_service.check_agent(principal, body.node_name)
    node = node_service.heartbeat(session, node_name=body.node_name, lease_s=ctx.settings.node_lease_s)
    stale: list[dict] = []
    if node is not None and body.running:
        current = node_service.current_attempts(session, node_name=body.node_name)
        stale = [_ref(_key(k)) for k in body.running if _key(k) not in current]
    session.commit()
    return {"known": node is not None, "lease_s": ctx.settings.node_lease_s,
            "heartbeat_s": ctx.settings.heartbeat_interval_s, "stale": stale}


@router.post("/adopt")
def adopt(body: AdoptBody, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    """After an agent restart: which of the attempts its runtimes still hold to keep, which to stop.

    Attempts the database places on this node that the agent did not bring
    back: started ones are lost (requeued, bounded by ``max_retries``), ones
    never started get their launch re-sent.
    """
    node_service.check_agent(principal, body.node_name)
    settings = ctx.settings
    current = node_service.current_attempts(session, node_name=body.node_name)
    adopted = {_key(k) for k in body.attempts}
    now = node_service.db_now(session)
    keep, stop, launches, stops = [], [], [], []
    for key in sorted(adopted):
        if key not in current:
            stop.append(_ref(key))
            continue
        job, attempt = current[key]
        spec = _spec(session, ctx, job, key, body.node_name)
        elapsed = (now - attempt.started_at).total_seconds() if attempt.started_at else 0.0
        keep.append({**_ref(key), "state": job.state, "elapsed_s": max(0.0, elapsed), "spec": spec.to_dict()})
    lost_jobs: set[str] = set()
    for key, (job, attempt) in sorted(current.items()):
        if key in adopted or job.id in lost_jobs:
            continue
        if job.state == JobState.RUNNING:
            lost_jobs.add(job.id)
            session.refresh(job, with_for_update=True)
            if job.attempt != key[1] or JobState(job.state) not in (JobState.RUNNING, JobState.ADMITTED):
                continue
            _state, more = lose_attempt(
                session, job=job, reason=f"the agent of {body.node_name} restarted without it",
                max_retries=settings.max_retries, grace_s=settings.default_grace_s,
            )
            stops += more
        else:
            launches.append(_spec(session, ctx, job, key, body.node_name))
            attempt.launch_sent_at = now
    session.commit()
    for spec in launches:
        ctx.dispatcher.launch(spec)
    for request in stops:
        if request.node_name != body.node_name:
            ctx.dispatcher.stop(request)
    if lost_jobs:
        ctx.admitter.wake()
    return {"keep": keep, "stop": stop, "lease_s": settings.node_lease_s, "heartbeat_s": settings.heartbeat_interval_s}


def _spec(session, ctx, job: Job, key: node_service.AttemptKey, node_name: str) -> LaunchSpec:  # noqa: ANN001
    rows = session.scalars(
        select(Allocation).join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job.id, Allocation.attempt == key[1], Allocation.replica == key[2])
        .where(Node.name == node_name)
    ).all()
    return ctx.admitter.launch_spec(job, key[1], key[2], node_name, list(rows))


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
        exit_code=body.exit_code, reason=body.reason.value, message=body.message, grace_s=ctx.settings.default_grace_s,
        max_retries=ctx.settings.max_retries,
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

"""/v1/agent: what node agents call (role ``agent``): register, heartbeat, adopt, claim, exit, logs.

- ``register``: the node's inventory; the answer carries the lease and the
  heartbeat interval the agent must keep (self-fencing is derived from them).
- ``heartbeat``: extends the lease (database clock) and lists, of the
  attempts the agent says it runs, the ``stale`` ones it must stop.
- ``adopt``: after an agent (re)start, the attempts its runtimes still hold;
  the answer says which to ``keep`` supervising (with their launch spec) and
  which to ``stop``. Attempts the database places on the node that the agent
  did not bring back are lost (requeued) if they had started, re-sent if not.

The logic is ``services.agents`` and the lifecycle; these routes check who
may speak for the node and translate the wire contract.

Each report is one transaction opened, run and committed on the route's own
thread (:func:`_unit`), not the request session of ``api.deps`` that commits
on another pool thread after the route returns: a start claim or an exit
holds its job's row lock (and an exit the hot usage-rollup row) until the
commit, and a commit that had to wait for a free pool thread while every
thread waited for those locks or a connection stalled all the agents
(100 simulated hosts: heartbeats answered after seconds, leases expired).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from queue_service.api.deps import ContextDep, CurrentPrincipal, write_slot
from queue_service.context import ServiceContext
from queue_service.db.session import transaction
from queue_service.errors import InvalidRequest
from queue_service.services import agents as agent_service
from queue_service.services import nodes as node_service
from queue_service.services import reports

# The bodies are the agent wire contract (workers/protocol.py, re-exported by workers.messages):
# the agent's client builds the same models, so the two ends cannot drift apart.
from workers.messages import (
    AdoptAnswer,
    AdoptBody,
    AttemptRef,
    ExitBody,
    ExitedAnswer,
    HeartbeatAnswer,
    HeartbeatBody,
    LogBody,
    LogsAnswer,
    NodeInventory,
    RegisterAnswer,
    RegisterBody,
    StartedAnswer,
)

router = APIRouter(prefix="/agent", tags=["agent"])

# On SQLite, a writing report first waits for a writer slot in the event loop (as ``api.deps`` does).
WriteSlot = Annotated[None, Depends(write_slot, scope="function")]


@contextmanager
def _unit(ctx: ServiceContext) -> Iterator[Session]:
    """The report's transaction, committed (effects sent) before the route returns, on this same thread."""
    with transaction(ctx.sessions) as session:
        yield session


@router.post("/register", response_model=RegisterAnswer)
def register(body: RegisterBody, principal: CurrentPrincipal, ctx: ContextDep, _slot: WriteSlot) -> RegisterAnswer:
    try:
        inventory = NodeInventory.from_dict(body.inventory)
    except TypeError as exc:
        raise InvalidRequest(f"bad inventory: {exc}", field="inventory") from exc
    node_service.check_agent(principal, inventory.node_name)
    with _unit(ctx) as session:
        return agent_service.register(session, inventory=inventory, settings=ctx.settings, fleet=ctx.fleet)


async def arrival() -> float:
    """When the request arrived (monotonic), read in the event loop before it queues for a thread or a lock."""
    return time.monotonic()


@router.post("/heartbeat", response_model=HeartbeatAnswer)
def heartbeat(arrived: Annotated[float, Depends(arrival)], body: HeartbeatBody, principal: CurrentPrincipal,
              ctx: ContextDep, _slot: WriteSlot) -> HeartbeatAnswer:
    """Extend the lease; ``stale``: attempts the agent runs that the database no longer places there."""
    node_service.check_agent(principal, body.node_name)
    with _unit(ctx) as session:
        return agent_service.heartbeat(session, node_name=body.node_name, running=body.running,
                                       settings=ctx.settings, mps=body.mps, waited_s=time.monotonic() - arrived,
                                       fleet=ctx.fleet)


@router.post("/adopt", response_model=AdoptAnswer)
def adopt(body: AdoptBody, principal: CurrentPrincipal, ctx: ContextDep, _slot: WriteSlot) -> AdoptAnswer:
    """After an agent restart: which of the attempts its runtimes still hold to keep, which to stop.

    Attempts the database places on this node that the agent did not bring
    back: started ones are lost (requeued, bounded by ``max_retries``), ones
    never started get their launch re-sent.
    """
    node_service.check_agent(principal, body.node_name)
    with _unit(ctx) as session:
        return agent_service.adopt(session, node_name=body.node_name, attempts=body.attempts,
                                   settings=ctx.settings, fleet=ctx.fleet)


@router.post("/started", response_model=StartedAnswer)
def started(body: AttemptRef, principal: CurrentPrincipal, ctx: ContextDep, _slot: WriteSlot) -> StartedAnswer:
    """The start claim: 200 means start it, 409 means do not (stale or cancelled)."""
    node_service.check_agent(principal, body.node_name)
    with _unit(ctx) as session:
        job = reports.claim_start(session, job_id=body.job_id, attempt=body.attempt, node_name=body.node_name,
                                  replica=body.replica)
        return StartedAnswer(state=job.state)


@router.post("/exited", response_model=ExitedAnswer)
def exited(body: ExitBody, principal: CurrentPrincipal, ctx: ContextDep, _slot: WriteSlot) -> ExitedAnswer:
    """One replica's end; 409 for a stale attempt or a job whose state the exit cannot change."""
    node_service.check_agent(principal, body.node_name)
    with _unit(ctx) as session:
        if body.node_fault:  # the node's row before the job's (``services.nodes``: the lock order)
            node_service.lock(session, body.node_name)
        outcome = reports.report_exit(
            session, settings=ctx.settings, job_id=body.job_id, attempt=body.attempt, node_name=body.node_name,
            replica=body.replica, exit_code=body.exit_code, reason=body.reason.value, message=body.message,
            stop_cause=body.stop_cause, node_fault=body.node_fault,
        )
        if body.node_fault:  # the node failed it, not the job: a node that keeps failing is drained
            agent_service.node_fault(session, node_name=body.node_name, reason=body.message, settings=ctx.settings)
        return ExitedAnswer(state=outcome.job.state, finalized=outcome.finalized)


@router.post("/logs", response_model=LogsAnswer)
def logs(body: LogBody, principal: CurrentPrincipal, ctx: ContextDep, _slot: WriteSlot) -> LogsAnswer:
    node_service.check_agent(principal, body.node_name)
    try:
        data = base64.b64decode(body.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("data_b64 is not base64", field="data_b64") from exc
    with _unit(ctx) as session:
        end = reports.append_logs(
            session, job_id=body.job_id, attempt=body.attempt,
            stream=body.stream if body.replica == 0 else f"{body.stream}.{body.replica}",
            offset=body.offset, data=data, max_bytes=ctx.settings.max_log_bytes,
            node_name=body.node_name, replica=body.replica,
        )
    return LogsAnswer(end=end)

"""/v1/agent/samples: agents' NVML samples; idle jobs are flagged and, if switched on, reclaimed."""

from __future__ import annotations

from fastapi import APIRouter

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.services import idle as idle_service
from queue_service.services import nodes as node_service
from workers.messages import SamplesAnswer, SamplesBody  # the agent wire contract: the agent's client sends this model

router = APIRouter(prefix="/agent", tags=["agent"])


@router.post("/samples", response_model=SamplesAnswer)
def post_samples(body: SamplesBody, principal: CurrentPrincipal, session: SessionDep,
                 ctx: ContextDep) -> SamplesAnswer:
    """Store the node's samples; answers which of its jobs are idle (and which were reclaimed)."""
    node_service.check_agent(principal, body.node_name)
    return idle_service.record_samples(session, node_name=body.node_name, samples=body.samples,
                                       settings=ctx.settings)

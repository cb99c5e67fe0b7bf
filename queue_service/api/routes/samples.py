"""/v1/agent/samples: agents' NVML samples; idle jobs are flagged and, if switched on, reclaimed."""

from __future__ import annotations

from fastapi import APIRouter

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.schemas.usage import IdleJobPublic, SamplesCreate
from queue_service.auth import Principal
from queue_service.billing import samples as sample_service
from queue_service.db.models import Job, JobState, Role
from queue_service.services import audit
from queue_service.services import jobs as job_service
from queue_service.services import nodes as node_service

router = APIRouter(prefix="/agent", tags=["agent"])

# Who the idle-reclaim policy acts as in audit rows and job reasons.
RECLAIMER = Principal(token_id="system", name="idle-reclaim", role=Role.OPERATOR)


@router.post("/samples")
def post_samples(body: SamplesCreate, principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> dict:
    """Store the node's samples; answers which of its jobs are idle (and which were reclaimed)."""
    node_service.check_agent(principal, body.node_name)
    stored = sample_service.record(session, node_name=body.node_name, samples=[
        sample_service.SampleIn(**s.model_dump()) for s in body.samples
    ])
    settings = ctx.settings
    idle: list[IdleJobPublic] = []
    stops = []
    for job_id, attempt in sorted({(s.job_id, s.attempt) for s in body.samples}):
        if not sample_service.is_idle(session, job_id=job_id, attempt=attempt,
                                      threshold_percent=settings.idle_sm_percent, after_s=settings.idle_after_s):
            continue
        job = session.get(Job, job_id)
        reclaim = settings.idle_reclaim and job is not None and job.state == JobState.RUNNING \
            and not job.cancel_requested
        if reclaim:
            why = f"GPU idle (SM below {settings.idle_sm_percent:g}% for {settings.idle_after_s:g} s)"
            _job, job_stops = job_service.cancel(session, job_id=job_id, principal=RECLAIMER,
                                                 grace_s=settings.default_grace_s)
            audit.record(session, actor=RECLAIMER, action="job.reclaim_idle", target=job_id, reason=why)
            stops += job_stops
        idle.append(IdleJobPublic(job_id=job_id, attempt=attempt, reclaimed=reclaim))
    session.commit()
    for stop in stops:  # after the commit: an agent never hears of an uncommitted cancel
        ctx.dispatcher.stop(stop)
    return {"stored": stored, "idle": [i.model_dump() for i in idle]}

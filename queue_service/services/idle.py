"""NVML samples in, idle jobs out: the optional idle-reclaim policy (``GPUQ_IDLE_RECLAIM``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.billing import samples as sample_service
from queue_service.db.models import Job, JobState, Role
from queue_service.lifecycle import grace, transitions
from queue_service.lifecycle.states import Actor, StopCause
from queue_service.services import audit
from queue_service.settings import Settings
from workers.messages import IdleJob, SampleBody, SamplesAnswer

# Who the idle-reclaim policy acts as in audit rows and job events.
RECLAIMER = Principal(token_id="system", name="idle-reclaim", role=Role.OPERATOR)


def record_samples(session: Session, *, node_name: str, samples: Sequence[SampleBody],
                   settings: Settings) -> SamplesAnswer:
    """Store the node's samples; flag (and, if switched on, reclaim) the jobs whose GPUs sat idle."""
    stored = sample_service.record(session, node_name=node_name, samples=[
        sample_service.SampleIn(**s.model_dump()) for s in samples
    ])
    idle: list[IdleJob] = []
    for job_id, attempt in sorted({(s.job_id, s.attempt) for s in samples}):
        if not sample_service.is_idle(session, job_id=job_id, attempt=attempt,
                                      threshold_percent=settings.idle_sm_percent, after_s=settings.idle_after_s):
            continue
        job = session.get(Job, job_id, with_for_update=True)
        reclaim = bool(settings.idle_reclaim and job is not None and job.state == JobState.RUNNING
                       and job.stop_action is None)
        if reclaim and job is not None:
            why = f"GPU idle (SM below {settings.idle_sm_percent:g}% for {settings.idle_after_s:g} s)"
            transitions.request_stop(
                session, job=job, who=transitions.Who(Actor.OPERATOR, RECLAIMER.label), cause=StopCause.RECLAIM,
                requeue=False, reason=f"reclaimed by {RECLAIMER.label}: {why}",
                grace_s=grace.grace_s(session, settings=settings, priority_class=job.priority_class),
            )
            audit.record(session, actor=RECLAIMER, action="job.reclaim_idle", target=job_id, reason=why)
        idle.append(IdleJob(job_id=job_id, attempt=attempt, reclaimed=reclaim))
    return SamplesAnswer(stored=stored, idle=idle)

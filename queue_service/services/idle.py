"""NVML samples in, idle jobs out: the idle flag, and the optional idle-reclaim policy (``GPUQ_IDLE_RECLAIM``).

One rule says whether a job is idle (``billing.samples.is_idle``: every SM
figure of the attempt over the last ``GPUQ_IDLE_AFTER_S`` below
``GPUQ_IDLE_SM_PERCENT``). With each batch a running job's flag follows it:
set (``jobs.idle_since``, an ``idle`` event) when the rule says idle, cleared
(an ``active`` event) when it no longer does. Reclaiming is separate and off
unless an operator switches it on.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.billing import samples as sample_service
from queue_service.billing.ledger import db_now
from queue_service.db.models import Job, JobState, Role
from queue_service.lifecycle import events, grace, transitions
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
        is_idle = sample_service.is_idle(session, job_id=job_id, attempt=attempt,
                                         threshold_percent=settings.idle_sm_percent, after_s=settings.idle_after_s)
        job = _flag(session, job_id=job_id, attempt=attempt, idle=is_idle, settings=settings)
        if not is_idle:
            continue
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


def _flag(session: Session, *, job_id: str, attempt: int, idle: bool, settings: Settings) -> Job | None:
    """The job (locked when it changes or may be reclaimed), its idle flag in step with the rule.

    A change writes an ``idle`` / ``active`` event (``events.mark_idle``); only the current attempt of a
    running job is flagged.
    """
    job = session.get(Job, job_id)
    change = (job is not None and job.attempt == attempt and job.state == JobState.RUNNING
              and (job.idle_since is not None) != idle)
    if not (change or idle):
        return job
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if (job is None or not change or job.attempt != attempt or job.state != JobState.RUNNING
            or (job.idle_since is not None) == idle):
        return job
    why = (f"SM below {settings.idle_sm_percent:g}% for {settings.idle_after_s:g} s" if idle
           else f"SM at or above {settings.idle_sm_percent:g}% again")
    events.mark_idle(session, job=job, idle=idle, at=db_now(session), reason=why)
    return job

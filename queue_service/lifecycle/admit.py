"""Admission: queued → admitted in bulk, with the attempt, allocation and event rows of each job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from queue_service.db.base import in_chunks, new_id
from queue_service.db.models import Allocation, Attempt, Job, JobEvent
from queue_service.lifecycle.moves import ADMITTER
from queue_service.lifecycle.states import Actor, AttemptState, Event, JobState
from queue_service.lifecycle.table import check

ALLOCATION_COLUMNS = ("id", "job_id", "attempt", "replica", "node_id", "kind", "gpu_uuid", "slot", "blocks",
                      "gpu_memory_mib", "mig_profile", "mig_start", "mig_uuid", "cpus_milli", "memory_mib",
                      "created_at")


@dataclass(frozen=True, slots=True)
class ReplicaRows:
    """What one admitted gang member holds: its node and allocation rows (the launch spec reads them)."""

    replica: int
    node_id: str
    rows: list[Allocation]


@dataclass(frozen=True, slots=True)
class Admitted:
    """One job the admission claimed: its new attempt number and each member's rows."""

    job: Job
    attempt: int
    replicas: list[ReplicaRows] = field(default_factory=list)


def admit(session: Session, *, placements: Sequence[tuple[Job, list[ReplicaRows]]], at: datetime,
          notes: Mapping[str, str] | None = None) -> list[Admitted]:
    """queued → admitted for each job, in bulk: one conditional UPDATE, then attempts, allocations, events.

    The UPDATE only claims jobs still queued, so a cancel that committed since
    the snapshot wins; the partial unique index refuses a slice held twice
    (the caller's whole transaction rolls back). ``notes`` (job id → text) says
    how a job was placed when that matters to its user, e.g. without an NVLink
    clique: its reason is then "starting (<note>)" instead of "starting".
    """
    if not placements:
        return []
    for job, _replicas in placements:
        check(Event.ADMIT, JobState(job.state), JobState.ADMITTED, Actor.ADMITTER, job_id=job.id)
    claimed: set[str] = set()
    ids = [job.id for job, _ in placements]
    for chunk in in_chunks(ids):
        claimed.update(session.scalars(
            update(Job)
            .where(Job.id.in_(chunk), Job.state == JobState.QUEUED)
            .values(state=JobState.ADMITTED, attempt=Job.attempt + 1, admitted_at=at, reason="starting")
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).all())
    attempts: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    out: list[Admitted] = []
    for job, replicas in placements:
        if job.id not in claimed:
            continue
        number = job.attempt + 1
        reason = f"starting ({notes[job.id]})" if notes and notes.get(job.id) else "starting"
        if reason != "starting":  # rare: one more UPDATE for the jobs placed with a note
            session.execute(update(Job).where(Job.id == job.id).values(reason=reason)
                            .execution_options(synchronize_session=False))
        # The UPDATE bypassed the ORM: bring the loaded object up to date without another SELECT.
        job.state, job.attempt, job.admitted_at, job.reason = JobState.ADMITTED, number, at, reason
        attempts.append({"id": new_id(), "job_id": job.id, "number": number, "created_at": at,
                         "node_id": replicas[0].node_id if replicas else None, "launch_sent_at": at,
                         "exits": {}, "state": AttemptState.ADMITTED, "reason": ""})
        for member in replicas:
            for row in member.rows:
                row.id, row.job_id, row.attempt, row.created_at = row.id or new_id(), job.id, number, at
                rows.append({c: getattr(row, c) for c in ALLOCATION_COLUMNS})
        event_rows.append({"job_id": job.id, "attempt": number, "at": at, "event": Event.ADMIT.value,
                           "from_state": JobState.QUEUED.value, "to_state": JobState.ADMITTED.value,
                           "actor": ADMITTER.label, "cause": None, "reason": ""})
        out.append(Admitted(job, number, list(replicas)))
    if attempts:
        session.execute(insert(Attempt), attempts)
        session.execute(insert(Allocation), rows)
        session.execute(insert(JobEvent), event_rows)
    return out

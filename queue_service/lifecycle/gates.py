"""What keeps a queued job out of a cycle before placement: its dependencies and its array's limit.

- **Dependencies** (Slurm's ``--dependency``): a job may wait for others to
  end — ``ok`` (succeeded), ``notok`` (failed, timed out or cancelled),
  ``any`` (ended at all). While a dependency is open the job waits with the
  reason; once one can never be met, the job is cancelled with that reason
  (Slurm's ``kill_invalid_depend``), an event by the service.
- **Array limits** (``--array 0-99%8``): at most ``array_limit`` tasks of
  one array are admitted or running at once; the lowest indices go first.
- **Infrastructure back-off**: a job requeued because its node failed its
  launch waits until ``retry_not_before`` (``lifecycle.reports.back_off``).

``satisfied`` and ``array_window`` are the rules, pure; ``hold_back`` applies
them to the cycle's queued rows in the cycle's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.db.clock import db_now
from queue_service.db.models import Job
from queue_service.lifecycle import effects
from queue_service.lifecycle.moves import SERVICE, move
from queue_service.lifecycle.states import LIVE_STATES, Event, JobState


class Condition(StrEnum):
    """What a dependency waits for."""

    OK = "ok"  # the job succeeded
    NOTOK = "notok"  # the job failed, timed out or was cancelled
    ANY = "any"  # the job ended, however


_MEANS = {Condition.OK: "succeed", Condition.NOTOK: "fail", Condition.ANY: "end"}


def satisfied(condition: Condition, state: JobState) -> bool | None:
    """True once met, False once it can never be met, None while the job it names has not ended."""
    if not state.final:
        return None
    if condition is Condition.ANY:
        return True
    return (state is JobState.SUCCEEDED) == (condition is Condition.OK)


def array_window(limit: int, live: int, indices: Sequence[int]) -> tuple[list[int], list[int]]:
    """Of the queued ``indices`` (any order), the ones that may be admitted now and the ones held back."""
    room = max(0, limit - live)
    ordered = sorted(indices)
    return ordered[:room], ordered[room:]


def hold_back(session: Session, *, queued: Mapping[str, Job]) -> dict[str, str]:
    """Queued jobs this cycle must skip, with why; cancels those whose dependency can never be met."""
    held: dict[str, str] = {}
    held.update(_backing_off(session, [j for j in queued.values() if j.retry_not_before is not None]))
    held.update(_dependencies(session, [j for j in queued.values() if j.depends_on and j.id not in held]))
    held.update(_arrays(session, [j for j in queued.values() if j.array_limit and j.id not in held]))
    return held


def _dependencies(session: Session, jobs: Sequence[Job]) -> dict[str, str]:
    if not jobs:
        return {}
    wanted = {d["job_id"] for job in jobs for d in job.depends_on}
    states = {job_id: JobState(state) for job_id, state in
              session.execute(select(Job.id, Job.state).where(Job.id.in_(sorted(wanted)))).all()}
    held: dict[str, str] = {}
    now = None
    for job in jobs:
        waiting: list[str] = []
        never = ""
        for dep in job.depends_on:
            condition = Condition(dep["condition"])
            state = states.get(dep["job_id"], JobState.CANCELLED)  # a job that vanished can never end well
            met = satisfied(condition, state)
            if met is False:
                never = (f"dependency can never be met: job {dep['job_id']} is {state.value}, "
                         f"and this job waited for it to {_MEANS[condition]}")
                break
            if met is None:
                waiting.append(f"job {dep['job_id']} to {_MEANS[condition]}")
        if never:
            now = now or db_now(session)
            move(session, job, Event.CANCEL, JobState.CANCELLED, SERVICE, at=now, reason=never)
            job.reason, job.finished_at = never, now
            effects.queue(session, wake=True)  # its own dependents may be decided now
            held[job.id] = never
        elif waiting:
            held[job.id] = "waiting for " + ", ".join(waiting)
    return held


def _backing_off(session: Session, jobs: Sequence[Job]) -> dict[str, str]:
    if not jobs:
        return {}
    now = db_now(session)
    held: dict[str, str] = {}
    for job in jobs:
        at = job.retry_not_before
        if at is not None and at.replace(tzinfo=None) > now.replace(tzinfo=None):
            held[job.id] = f"backing off after a node failed its launch: next try at {at:%H:%M:%S} UTC"
    return held


def _arrays(session: Session, jobs: Iterable[Job]) -> dict[str, str]:
    by_array: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.array_id is not None:
            by_array[job.array_id].append(job)
    if not by_array:
        return {}
    live = dict(session.execute(
        select(Job.array_id, func.count()).where(Job.array_id.in_(sorted(by_array)),
                                                 Job.state.in_([s.value for s in LIVE_STATES]))
        .group_by(Job.array_id)
    ).all())
    held: dict[str, str] = {}
    for array_id, tasks in by_array.items():
        limit = tasks[0].array_limit or 0
        running = int(live.get(array_id, 0))
        by_index = {job.array_index or 0: job for job in tasks}
        _allowed, later = array_window(limit, running, list(by_index))
        for index in later:
            held[by_index[index].id] = f"array {array_id}: at most {limit} task(s) at once ({running} live)"
    return held

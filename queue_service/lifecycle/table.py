"""The written transition table of a job, and the one check every writer makes.

Each row: the event, the state it may happen in (``None``: the job does not
exist yet), the states it may lead to, and who may cause it. A move that is
not in the table is an :class:`IllegalTransition` (HTTP 409 with the current
state): nothing is written and no event is recorded.

======== ================ ============================== ==============================
event    from             to                             who
======== ================ ============================== ==============================
submit   (new)            queued, pending_approval       user, operator
approve  pending_approval queued                         approver
deny     pending_approval denied                         approver
cancel   pending_approval cancelled                      user, operator, service
expire   queued           pending_approval               service
admit    queued           admitted                       admitter
start    admitted         running                        agent
finish   running          succeeded, failed, timed_out   agent
cancel   queued           cancelled                      user, operator, service
cancel   admitted         cancelled                      user, operator
stop     running          running (stopping)             user, operator, admitter, agent
stopped  admitted         queued, cancelled              operator, admitter
stopped  running          queued, cancelled              agent
lose     admitted         queued, failed, cancelled      service, agent
lose     running          queued, failed, cancelled      service, agent
hold     queued           queued (held)                  operator
release  queued           queued                         operator
idle     running          running (idle)                 service
active   running          running                        service
======== ================ ============================== ==============================

The service cancels a queued job whose dependency can never be met
(``gates``). ``stop`` leaves a running job running with ``stop_cause`` set until its
agent reports the exit (``stopped``, or ``finish`` for a gang whose member
failed). ``stopped`` from ``admitted`` is a preemption or reclaim of a job
whose agent has not started it yet: its capacity is freed at once.

``pending_approval`` is where a job waits when its project's approval policy
or budget wants a person's yes (``lifecycle.approval``): ``approve`` queues it,
``deny`` ends it ``denied`` with the approver's reason, and an approval given
with an expiry that runs out before the job is first admitted sends it back
(``expire``, by the service) for a fresh decision.

``idle`` and ``active`` change no state: the service flags a running job whose
GPUs sat idle (``jobs.idle_since``, ``events.mark_idle``) and clears the flag
when its samples show work again.
"""

from __future__ import annotations

from dataclasses import dataclass

from queue_service.errors import Conflict
from queue_service.lifecycle.states import Actor, Event, JobState

Q, A, R = JobState.QUEUED, JobState.ADMITTED, JobState.RUNNING
S, F, C, T = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT
P, D = JobState.PENDING_APPROVAL, JobState.DENIED
USER, OPERATOR, ADMITTER, AGENT, SERVICE = Actor.USER, Actor.OPERATOR, Actor.ADMITTER, Actor.AGENT, Actor.SERVICE
APPROVER = Actor.APPROVER


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table."""

    event: Event
    source: JobState | None
    targets: frozenset[JobState]
    actors: frozenset[Actor]


def _row(event: Event, source: JobState | None, targets: set[JobState], actors: set[Actor]) -> Transition:
    return Transition(event, source, frozenset(targets), frozenset(actors))


TABLE: tuple[Transition, ...] = (
    _row(Event.SUBMIT, None, {Q, P}, {USER, OPERATOR}),
    _row(Event.APPROVE, P, {Q}, {APPROVER}),
    _row(Event.DENY, P, {D}, {APPROVER}),
    _row(Event.CANCEL, P, {C}, {USER, OPERATOR, SERVICE}),
    _row(Event.EXPIRE, Q, {P}, {SERVICE}),
    _row(Event.ADMIT, Q, {A}, {ADMITTER}),
    _row(Event.START, A, {R}, {AGENT}),
    _row(Event.FINISH, R, {S, F, T}, {AGENT}),
    _row(Event.CANCEL, Q, {C}, {USER, OPERATOR, SERVICE}),
    _row(Event.CANCEL, A, {C}, {USER, OPERATOR}),
    _row(Event.STOP, R, {R}, {USER, OPERATOR, ADMITTER, AGENT}),
    _row(Event.STOPPED, A, {Q, C}, {OPERATOR, ADMITTER}),
    _row(Event.STOPPED, R, {Q, C}, {AGENT}),
    _row(Event.LOSE, A, {Q, F, C}, {SERVICE, AGENT}),
    _row(Event.LOSE, R, {Q, F, C}, {SERVICE, AGENT}),
    _row(Event.HOLD, Q, {Q}, {OPERATOR}),
    _row(Event.RELEASE, Q, {Q}, {OPERATOR}),
    _row(Event.IDLE, R, {R}, {SERVICE}),
    _row(Event.ACTIVE, R, {R}, {SERVICE}),
)

_INDEX: dict[tuple[Event, JobState | None], Transition] = {(t.event, t.source): t for t in TABLE}


class IllegalTransition(Conflict):
    """The table has no such move from the job's current state (HTTP 409; nothing changed)."""

    def __init__(self, message: str, *, state: JobState | None, event: Event) -> None:
        super().__init__(message, field="state", state=state.value if state else None)
        self.source = state  # the job's state when the move was refused (None: no job yet)
        self.event = event


def allowed(event: Event, source: JobState | None) -> Transition | None:
    """The row for ``event`` in ``source``, or None."""
    return _INDEX.get((event, source))


def check(event: Event, source: JobState | None, target: JobState, actor: Actor, *, job_id: str = "") -> None:
    """Raise :class:`IllegalTransition` unless the table allows ``source --event--> target`` by ``actor``."""
    row = _INDEX.get((event, source))
    what = f"job {job_id}" if job_id else "the job"
    if row is None:
        sources = sorted(t.source.value for t in TABLE if t.event is event and t.source is not None)
        raise IllegalTransition(f"{what} is {source.value if source else 'new'}; only {' or '.join(sources)} "
                                f"jobs can {event.value}", state=source, event=event)
    if target not in row.targets:
        raise IllegalTransition(
            f"{what}: {event.value} leads from {source.value if source else 'new'} to "
            f"{', '.join(sorted(t.value for t in row.targets))}, not {target.value}", state=source, event=event)
    if actor not in row.actors:
        raise IllegalTransition(f"{what}: the {actor.value} may not {event.value} it", state=source, event=event)

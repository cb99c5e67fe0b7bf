"""Effects after commit, in one place.

A transition never sends anything itself: it queues its launches, stops and
"wake the admitter" on the session (:func:`queue`). One hook, installed on
the service's session factory (:func:`install`), sends them once the
transaction has committed, and drops them if it rolled back — so an agent
never hears of an uncommitted admission, and a route cannot forget to wake
the admitter. The broker is only a doorbell: a send that fails is re-sent
by the reconciler from what the database says is outstanding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from workers.messages import LaunchSpec, StopRequest

log = logging.getLogger(__name__)

_KEY = "gpuq.effects"
moves_log = logging.getLogger("gpuq.jobs")  # one INFO line per committed job transition


@dataclass(frozen=True, slots=True)
class Moved:
    """One job transition, logged once its transaction commits (``moves.move`` notes it)."""

    job: Any  # the Job row (its id is set at flush, after the move)
    source: str | None
    target: str
    who: str
    reason: str = ""


@dataclass(slots=True)
class Effects:
    """What one transaction asks for once it has committed."""

    launches: list[LaunchSpec] = field(default_factory=list)
    stops: list[StopRequest] = field(default_factory=list)
    wake: bool = False  # run an admission cycle soon (capacity freed, a job queued or changed)
    cluster_changed: bool = False  # a node registered: "never fits" answers may change
    moves: list[Moved] = field(default_factory=list)  # job transitions: one INFO line each once committed
    job_events: bool = False  # job events appended or a webhook added: the webhook sender has work

    def merge(self, other: Effects) -> None:
        self.launches.extend(other.launches)
        self.stops.extend(other.stops)
        self.moves.extend(other.moves)
        self.wake = self.wake or other.wake
        self.cluster_changed = self.cluster_changed or other.cluster_changed
        self.job_events = self.job_events or other.job_events


def pending(session: Session) -> Effects:
    """The effects queued on this session's current transaction (created on first use)."""
    if not session.in_transaction():
        session.begin()  # so a rollback before any SQL still drops them (it ends this transaction)
    effects = session.info.get(_KEY)
    if effects is None:
        effects = session.info[_KEY] = Effects()
    return effects


def queue(
    session: Session, *, launches: list[LaunchSpec] | None = None, stops: list[StopRequest] | None = None,
    wake: bool = False, cluster_changed: bool = False, job_events: bool = False,
) -> None:
    """Ask for these effects once the session's transaction commits."""
    effects = pending(session)
    effects.launches.extend(launches or ())
    effects.stops.extend(stops or ())
    effects.wake = effects.wake or wake
    effects.cluster_changed = effects.cluster_changed or cluster_changed
    effects.job_events = effects.job_events or job_events


def note_move(session: Session, moved: Moved) -> None:
    """Log this transition once the session's transaction commits (never for a rolled-back one)."""
    pending(session).moves.append(moved)


def log_moves(effects: Effects) -> None:
    """One INFO line per transition: job, states, who, where (node and GPUs of its launches) and why."""
    if not effects.moves or not moves_log.isEnabledFor(logging.INFO):
        return
    placed: dict[str, list[LaunchSpec]] = {}
    for spec in effects.launches:
        placed.setdefault(spec.job_id, []).append(spec)
    for m in effects.moves:
        job_id = getattr(m.job, "id", None) or "?"
        where = "; ".join(f"{s.node_name} GPUs [{', '.join(s.gpu_uuids) or 'none'}]" for s in placed.get(job_id, ()))
        moves_log.info("job %s %s -> %s by %s%s%s", job_id, m.source or "(new)", m.target, m.who,
                       f" on {where}" if where else "", f": {m.reason}" if m.reason else "")


class Sink:
    """Where committed effects go: the dispatcher's sends, the admitter's wake and the webhook sender's."""

    def __init__(
        self, *, send: Callable[[list[LaunchSpec], list[StopRequest]], object],
        wake: Callable[[], object], cluster_changed: Callable[[], object],
        job_events: Callable[[], object] = lambda: None,
    ) -> None:
        self.send, self.wake, self.cluster_changed = send, wake, cluster_changed
        self.job_events = job_events

    def apply(self, effects: Effects) -> None:
        # Feasibility first, then the doorbells: a woken admitter must see the new cluster.
        if effects.cluster_changed:
            self.cluster_changed()
        if effects.launches or effects.stops:  # together: one round trip for a cycle's hundreds of launches
            self.send(effects.launches, effects.stops)
        if effects.wake:
            self.wake()
        if effects.job_events:
            self.job_events()


def install(sessions: sessionmaker[Session], sink: Sink) -> None:
    """Send each committed transaction's effects to ``sink``; forget a rolled-back one's."""

    @event.listens_for(sessions, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.in_nested_transaction():
            return  # a SAVEPOINT was released: the transaction has not committed yet
        effects = session.info.pop(_KEY, None)
        if effects is None:
            return
        try:
            log_moves(effects)
            sink.apply(effects)
        except Exception:
            log.exception("sending the effects of a committed transaction failed")

    @event.listens_for(sessions, "after_rollback")
    def _after_rollback(session: Session) -> None:
        if session.in_nested_transaction():
            return  # only a SAVEPOINT rolled back: the outer transaction's effects still stand
        session.info.pop(_KEY, None)


@contextmanager
def undone_on_error(session: Session) -> Iterator[None]:
    """The effects queued inside the block are put back as they were if it raises (rows are the caller's:
    :func:`savepoint` undoes them with a SAVEPOINT, the group commit by forgetting unflushed new rows)."""
    before = pending(session)
    saved = replace(before, launches=list(before.launches), stops=list(before.stops), moves=list(before.moves))
    try:
        yield
    except BaseException:
        session.info[_KEY] = saved
        raise


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A unit of work inside the session's transaction, undone alone if it raises — its effects too.

    The rows go with the SAVEPOINT; the effects it queued (a wake, a log line
    for a job that is not there) are put back as they were before it.
    """
    with undone_on_error(session), session.begin_nested():
        yield

"""Group commit (``queue_service.group_commit``): waiting units share one transaction, each undone alone."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from queue_service.context import ServiceContext
from queue_service.db.models import Project
from queue_service.errors import InvalidRequest
from queue_service.group_commit import GroupCommitter
from queue_service.lifecycle import effects


def _names(ctx: ServiceContext) -> set[str]:
    with ctx.sessions() as session:
        return set(session.scalars(select(Project.name)))


class Gate:
    """A unit that holds the committer's thread until released, so that the next units queue up behind it."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.release = threading.Event()

    def __call__(self, session: Session) -> str:
        self.running.set()
        assert self.release.wait(10)
        return "gate"

    def hold(self, committer: GroupCommitter):
        future = committer.submit(self)
        assert self.running.wait(10)
        return future


def _add(name: str, *, wake: bool = False):
    def work(session: Session) -> str:
        session.add(Project(name=name))
        session.flush()
        if wake:
            effects.queue(session, wake=True)
        return name
    return work


def test_units_waiting_together_share_one_transaction(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()
    try:
        futures = [gate.hold(committer)]
        futures += [committer.submit(_add(f"p{i}")) for i in range(1, 6)]
        gate.release.set()
        assert [f.result(timeout=20) for f in futures] == ["gate"] + [f"p{i}" for i in range(1, 6)]
        assert committer.batches == 2  # the gate alone, then the five that waited for it
        assert committer.units == 6
        assert {f"p{i}" for i in range(1, 6)} <= _names(ctx)
    finally:
        committer.stop()


def test_a_failing_unit_is_undone_alone_with_its_effects(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()

    def refused(session: Session) -> None:
        session.add(Project(name="refused"))
        session.flush()
        effects.queue(session, wake=True)  # queued, then undone with the unit: nothing may wake
        raise InvalidRequest("no", field="name")

    try:
        ctx.admitter._wake.clear()
        futures = [gate.hold(committer), committer.submit(_add("kept-1")), committer.submit(refused),
                   committer.submit(_add("kept-2"))]
        gate.release.set()
        assert futures[1].result(timeout=20) == "kept-1"
        assert futures[3].result(timeout=20) == "kept-2"
        with pytest.raises(InvalidRequest):
            futures[2].result(timeout=20)
        names = _names(ctx)
        assert {"kept-1", "kept-2"} <= names and "refused" not in names
        assert not ctx.admitter._wake.is_set()  # the refused unit's wake went with it
        # the control: a stored unit's wake does go out after the commit
        committer.submit(_add("woken", wake=True)).result(timeout=20)
        assert ctx.admitter._wake.is_set()
    finally:
        committer.stop()


def test_a_failed_commit_answers_every_unit_with_its_error(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()

    def sabotage(session: Session) -> None:
        def fail(inner: Session) -> None:
            if not inner.in_nested_transaction():  # before_commit fires on each savepoint's release too
                raise RuntimeError("commit refused")
        event.listen(session, "before_commit", fail)

    try:
        gate.hold(committer)
        futures = [committer.submit(_add("lost-1")), committer.submit(sabotage), committer.submit(_add("lost-2"))]
        gate.release.set()
        for future in futures:
            with pytest.raises(RuntimeError, match="commit refused"):
                future.result(timeout=20)
        assert not {"lost-1", "lost-2"} & _names(ctx)
        # the committer goes on: the next unit is stored
        assert committer.submit(_add("after")).result(timeout=20) == "after"
        assert "after" in _names(ctx)
    finally:
        committer.stop()


def test_stop_commits_what_is_queued_first(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    futures = [committer.submit(_add(f"s{i}")) for i in range(3)]
    committer.stop()
    assert [f.result(timeout=1) for f in futures] == ["s0", "s1", "s2"]

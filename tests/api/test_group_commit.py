"""Group commit (``queue_service.group_commit``): waiting units share one transaction and one flush, each
undone alone; what the batch cannot undo alone runs every unit again on its own, none stored twice."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
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

    def __call__(self, session: Session):
        self.running.set()
        assert self.release.wait(10)
        return lambda: "gate"

    def hold(self, committer: GroupCommitter):
        future = committer.submit(self)
        assert self.running.wait(10)
        return future


def _add(name: str, *, wake: bool = False):
    def work(session: Session):
        session.add(Project(name=name))
        if wake:
            effects.queue(session, wake=True)
        return lambda: name
    return work


def _counting_inserts(ctx: ServiceContext) -> list[str]:
    seen: list[str] = []

    def before(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO PROJECTS"):
            seen.append(statement)
    event.listen(ctx.engine, "before_cursor_execute", before)
    return seen


def _kept_around_a_refusal(committer: GroupCommitter, gate: Gate, first, refused, last, *,
                           names: tuple[str, str]) -> None:
    """Queue ``first``, ``refused`` and ``last`` behind the gate as one batch: the two are answered with their
    names, the refused one with its InvalidRequest."""
    futures = [gate.hold(committer), committer.submit(first), committer.submit(refused), committer.submit(last)]
    gate.release.set()
    assert futures[1].result(timeout=20) == names[0]
    assert futures[3].result(timeout=20) == names[1]
    with pytest.raises(InvalidRequest):
        futures[2].result(timeout=20)


def test_units_waiting_together_share_one_transaction(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()
    inserts = _counting_inserts(ctx)
    try:
        futures = [gate.hold(committer)]
        futures += [committer.submit(_add(f"p{i}")) for i in range(1, 6)]
        gate.release.set()
        assert [f.result(timeout=20) for f in futures] == ["gate"] + [f"p{i}" for i in range(1, 6)]
        assert committer.batches == 2  # the gate alone, then the five that waited for it
        assert committer.units == 6
        assert {f"p{i}" for i in range(1, 6)} <= _names(ctx)
        assert len(inserts) == 1  # the five rows in one flush: one multi-row INSERT, not one per unit
    finally:
        committer.stop()


def test_a_failing_unit_is_undone_alone_with_its_effects(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()

    def refused(session: Session) -> None:
        session.add(Project(name="refused"))
        effects.queue(session, wake=True)  # queued, then undone with the unit: nothing may wake
        raise InvalidRequest("no", field="name")

    try:
        ctx.admitter._wake.clear()
        _kept_around_a_refusal(committer, gate, _add("kept-1"), refused, _add("kept-2"), names=("kept-1", "kept-2"))
        names = _names(ctx)
        assert {"kept-1", "kept-2"} <= names and "refused" not in names
        assert not ctx.admitter._wake.is_set()  # the refused unit's wake went with it
        # the control: a stored unit's wake does go out after the commit
        committer.submit(_add("woken", wake=True)).result(timeout=20)
        assert ctx.admitter._wake.is_set()
    finally:
        committer.stop()


def test_a_unit_that_flushed_before_failing_has_every_unit_run_alone(ctx: ServiceContext) -> None:
    """Its rows went to the database with the others': the batch cannot undo it alone, so each unit runs again
    in its own transaction — the others stored once each, the failing one refused."""
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()
    runs: list[str] = []

    def counted(name: str):
        inner = _add(name)

        def work(session: Session):
            runs.append(name)
            return inner(session)
        return work

    def flushed_then_refused(session: Session) -> None:
        session.add(Project(name="flushed"))
        session.flush()
        raise InvalidRequest("no", field="name")

    try:
        _kept_around_a_refusal(committer, gate, counted("alone-1"), flushed_then_refused, counted("alone-2"),
                               names=("alone-1", "alone-2"))
        with ctx.sessions() as session:
            stored = list(session.scalars(select(Project.name).where(Project.name.in_(["alone-1", "alone-2",
                                                                                        "flushed"]))))
        assert sorted(stored) == ["alone-1", "alone-2"]
        assert runs == ["alone-1", "alone-1", "alone-2"]  # the batch stops at the failing unit; then each alone
    finally:
        committer.stop()


def test_a_row_the_batch_flush_refuses_is_refused_to_its_unit_alone(ctx: ServiceContext) -> None:
    """Two units add the same project name: the batch's one flush fails, and run alone the first is stored and
    only the second hears the database's refusal."""
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()
    try:
        futures = [gate.hold(committer), committer.submit(_add("twice")), committer.submit(_add("twice")),
                   committer.submit(_add("once"))]
        gate.release.set()
        assert futures[1].result(timeout=20) == "twice"
        with pytest.raises(IntegrityError):
            futures[2].result(timeout=20)
        assert futures[3].result(timeout=20) == "once"
        assert {"twice", "once"} <= _names(ctx)
    finally:
        committer.stop()


def test_a_failed_commit_answers_every_unit_with_its_error(ctx: ServiceContext) -> None:
    committer = GroupCommitter(ctx.sessions)
    gate = Gate()

    def sabotage(session: Session):
        def fail(inner: Session) -> None:
            raise RuntimeError("commit refused")
        event.listen(session, "before_commit", fail)
        return lambda: None

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

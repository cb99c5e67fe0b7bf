"""Effects after commit (``lifecycle.effects``): sent once a transaction committed, never after a rollback.

A real SQLite database and a real session factory with the hook installed;
the sink records what reaches it (the dispatcher and the admitter's wake
are what production plugs in).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from queue_service.lifecycle import effects
from workers.messages import LaunchSpec, StopRequest

LAUNCH_1 = LaunchSpec(job_id="j1", attempt=1, node_name="n1", command=["true"])
LAUNCH_2 = LaunchSpec(job_id="j2", attempt=1, node_name="n1", command=["true"])
STOP_1 = StopRequest(job_id="j3", attempt=2, node_name="n2", grace_s=5.0, reason="preempted", replica=0)


class Recorder:
    """A sink that records each call in order (and can be told to fail)."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.fail = False

    def _note(self, what: object) -> None:
        self.calls.append(what)
        if self.fail:
            raise RuntimeError("the broker is down")

    def sink(self) -> effects.Sink:
        def send(launches: list[LaunchSpec], stops: list[StopRequest]) -> None:
            """All of a transaction's commands in one call, launches first (the dispatcher's one pipeline)."""
            self.calls.extend([*(("launch", spec) for spec in launches), *(("stop", req) for req in stops)])
            if self.fail:
                raise RuntimeError("the broker is down")

        return effects.Sink(send=send, wake=lambda: self._note("wake"),
                            cluster_changed=lambda: self._note("cluster_changed"))


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'effects.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE marks (name TEXT)"))
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def sent(sessions: sessionmaker[Session]) -> Recorder:
    recorder = Recorder()
    effects.install(sessions, recorder.sink())
    return recorder


def _mark(session: Session, name: str) -> None:
    session.execute(text("INSERT INTO marks (name) VALUES (:n)"), {"n": name})


def _marks(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(text("SELECT name FROM marks ORDER BY rowid")))


def _queue_all(session: Session) -> None:
    """Ask for every kind of effect, deliberately out of the order they are sent in."""
    effects.queue(session, wake=True)
    effects.queue(session, stops=[STOP_1])
    effects.queue(session, launches=[LAUNCH_1])
    effects.queue(session, cluster_changed=True, launches=[LAUNCH_2])


def test_effects_reach_the_sink_only_after_commit_in_order(sessions, sent) -> None:
    session = sessions()
    _mark(session, "admitted")
    _queue_all(session)
    session.flush()
    assert sent.calls == [], "nothing is sent before the commit"
    session.commit()
    assert sent.calls == ["cluster_changed", ("launch", LAUNCH_1), ("launch", LAUNCH_2), ("stop", STOP_1), "wake"]
    # Sent once: the next transaction of the same session starts empty.
    _mark(session, "later")
    session.commit()
    assert len(sent.calls) == 5
    session.close()


def test_a_rolled_back_transaction_sends_nothing(sessions, sent) -> None:
    session = sessions()
    _mark(session, "admitted")
    _queue_all(session)
    session.rollback()
    assert sent.calls == [] and _marks(sessions) == []
    # Its effects do not leak into the session's next transaction either.
    _mark(session, "other")
    effects.queue(session, wake=True)
    session.commit()
    assert sent.calls == ["wake"]
    session.close()


def test_an_error_in_a_transaction_block_sends_nothing(sessions, sent) -> None:
    with pytest.raises(ZeroDivisionError), sessions() as session, session.begin():
        _mark(session, "admitted")
        effects.queue(session, launches=[LAUNCH_1], wake=True)
        _ = 1 / 0
    assert sent.calls == [] and _marks(sessions) == []


def test_effects_queued_in_a_transaction_block_before_any_sql_are_dropped_on_rollback(sessions, sent) -> None:
    session = sessions()
    with session.begin():
        effects.queue(session, launches=[LAUNCH_1])
        session.rollback()
    _mark(session, "next")
    session.commit()
    assert sent.calls == []
    session.close()


def test_effects_queued_before_the_transaction_began_are_dropped_on_rollback(sessions, sent) -> None:
    session = sessions()
    effects.queue(session, launches=[LAUNCH_1])
    session.rollback()
    _mark(session, "next")
    session.commit()
    assert sent.calls == []
    session.close()


def test_a_failing_sink_does_not_undo_the_commit(sessions, sent) -> None:
    sent.fail = True
    session = sessions()
    _mark(session, "admitted")
    effects.queue(session, launches=[LAUNCH_1], wake=True)
    session.commit()  # does not raise: the commit stands, the reconciler re-sends what is outstanding
    assert sent.calls == [("launch", LAUNCH_1)]  # the send failed at its first effect
    assert _marks(sessions) == ["admitted"]
    # The failed batch is gone; the next transaction's effects go out as usual.
    sent.fail = False
    _mark(session, "next")
    effects.queue(session, wake=True)
    session.commit()
    assert sent.calls == [("launch", LAUNCH_1), "wake"]
    assert _marks(sessions) == ["admitted", "next"]
    session.close()


def test_a_transaction_without_effects_sends_nothing(sessions, sent) -> None:
    with sessions() as session, session.begin():
        _mark(session, "plain")
    assert sent.calls == []


def test_pending_and_merge_accumulate() -> None:
    one = effects.Effects(launches=[LAUNCH_1], wake=False, cluster_changed=True)
    one.merge(effects.Effects(launches=[LAUNCH_2], stops=[STOP_1], wake=True))
    assert one == effects.Effects(launches=[LAUNCH_1, LAUNCH_2], stops=[STOP_1], wake=True, cluster_changed=True)
    session = Session()
    assert effects.pending(session) is effects.pending(session)
    effects.queue(session, launches=[LAUNCH_1])
    effects.queue(session, wake=True)
    assert effects.pending(session) == effects.Effects(launches=[LAUNCH_1], wake=True)


# -- savepoints: only the outermost transaction's commit sends -------------------------------------------------


def test_a_released_savepoint_sends_nothing_until_the_outer_commit(sessions, sent) -> None:
    session = sessions()
    _mark(session, "outer")
    savepoint = session.begin_nested()
    effects.queue(session, launches=[LAUNCH_1])
    savepoint.commit()
    assert sent.calls == [], "sent at the savepoint's release, before the transaction committed"
    session.rollback()
    assert sent.calls == [] and _marks(sessions) == []
    session.close()


def test_a_rolled_back_savepoint_keeps_the_outer_transactions_effects(sessions, sent) -> None:
    session = sessions()
    _mark(session, "outer")
    effects.queue(session, wake=True)
    savepoint = session.begin_nested()
    _mark(session, "inner")
    savepoint.rollback()
    session.commit()
    assert _marks(sessions) == ["outer"]
    assert sent.calls == ["wake"], "the outer transaction committed but its effects were dropped"
    session.close()

"""What an admission cycle reads: queued jobs as columns, and as entities only the jobs it changes.

Loading every queued job as a ``Job`` entity each cycle was most of a cycle's time with thousands
queued (a submit storm, the thousand-host benchmark); these tests pin the cheaper read and the race
it must keep right.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, select

from queue_service.admitter import read
from queue_service.db.models import Allocation, Job, JobState
from tests.api.helpers import auth
from tests.builders import job_body, register


@contextmanager
def counting_job_loads() -> Iterator[list[str]]:
    """The ids of every ``Job`` entity loaded from the database while the block runs."""
    loaded: list[str] = []

    def on_load(target: Job, _context: object) -> None:
        loaded.append(target.id)

    event.listen(Job, "load", on_load)
    try:
        yield loaded
    finally:
        event.remove(Job, "load", on_load)


def test_a_cycle_loads_only_the_jobs_it_changes(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    ids = [api.post("/v1/jobs", json=job_body(), headers=auth(actors.admin)).json()["id"] for _ in range(40)]
    with counting_job_loads() as loaded:
        first = ctx.admitter.run_once()
    assert first.admitted == 1 and first.waiting == 39
    # the first cycle admits one and gives the other 39 their first wait reason: 40 entities, no more
    assert sorted(loaded) == sorted(ids)
    with counting_job_loads() as loaded:
        second = ctx.admitter.run_once()
    assert second.waiting == 39
    with ctx.sessions() as session:
        admitted = set(session.scalars(select(Job.id).where(Job.state == JobState.ADMITTED)))
    # nothing changed: the queue was read as columns and no reason rewritten (the admitted job is read as
    # an entity for the snapshot's running set, as before)
    assert len(admitted) == 1 and set(loaded) <= admitted
    with ctx.sessions() as session:
        reasons = list(session.scalars(select(Job.reason).where(Job.state == JobState.QUEUED)))
    # the head says what it needs, the 38 behind it that they wait behind it: written once, kept since
    assert len(reasons) == 39 and sum("whole GPUs" in r for r in reasons) == 1
    assert sum(r.startswith("waiting behind job") for r in reasons) == 38


def test_jobs_of_one_shape_share_one_request(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    for gpus in (1, 1, 1, 0):
        api.post("/v1/jobs", json=job_body(resources={"gpus": gpus}), headers=auth(actors.admin))
    with ctx.sessions() as session:
        rows = read.queued(session)
        snapshot = read.snapshot(session, settings=ctx.settings, rows=rows)
    by_gpus: dict[int, set[int]] = {}
    for pending in snapshot.pending:
        by_gpus.setdefault(pending.request.gpus, set()).add(id(pending.request))
    assert len(snapshot.pending) == 4
    assert {gpus: len(objects) for gpus, objects in by_gpus.items()} == {0: 1, 1: 1}


def test_queued_rows_carry_their_lists_and_gates(ctx, api, actors) -> None:
    """The JSON lists are read as text and decoded only when not empty: the values must come through."""
    register(api, actors.agent, "n1", "h100-80gb:1")
    plain = api.post("/v1/jobs", json=job_body(), headers=auth(actors.admin)).json()["id"]
    pinned = api.post("/v1/jobs", json=job_body(resources={"gpus": 1, "gpu_models": ["h100-80gb"]}),
                      headers=auth(actors.admin)).json()["id"]
    after = api.post("/v1/jobs", json=job_body(depends_on=[{"job_id": plain}]), headers=auth(actors.admin)).json()
    assert "id" in after, after
    twin = api.post("/v1/jobs", json=job_body(), headers=auth(actors.admin)).json()["id"]
    with ctx.sessions() as session:
        session.get(Job, plain).avoid_nodes = ["n7", "n9"]
        session.commit()
        rows = {row.id: row for row in read.queued(session)}
    assert rows[plain].shape.avoid_nodes == ("n7", "n9") and rows[plain].shape.gpu_models == ()
    assert rows[pinned].shape.gpu_models == ("h100-80gb",) and rows[pinned].shape.avoid_nodes == ()
    assert rows[after["id"]].gated and not rows[plain].gated and not rows[pinned].gated
    # equal shape columns share one Shape object; different ones do not
    assert rows[twin].shape is rows[after["id"]].shape and rows[twin].shape is not rows[pinned].shape


def test_a_cancel_committed_after_the_cycle_read_wins(ctx, api, actors, monkeypatch) -> None:
    """PostgreSQL: another transaction may commit between the cycle's read and its writes (SQLite's one
    writer rules that out). The cycle loads the entities it admits after deciding; a job cancelled in
    between is left alone and the cycle does not fail."""
    if not ctx.admitter.is_postgres:
        pytest.skip("SQLite: the cycle holds the one write lock from its read to its commit")
    register(api, actors.agent, "n1", "h100-80gb:2")
    doomed, kept = (api.post("/v1/jobs", json=job_body(), headers=auth(actors.admin)).json()["id"]
                    for _ in range(2))
    original = read.queued

    def read_then_cancel(session):  # the cancel commits on its own connection, after this read
        rows = original(session)
        assert api.post(f"/v1/jobs/{doomed}/cancel", headers=auth(actors.admin)).status_code == 200
        return rows

    monkeypatch.setattr(read, "queued", read_then_cancel)
    report = ctx.admitter.run_once()
    with ctx.sessions() as session:
        states = dict(session.execute(select(Job.id, Job.state)).all())
        held = session.scalar(select(func.count()).select_from(Allocation).where(Allocation.job_id == doomed))
    assert states[doomed] == JobState.CANCELLED and held == 0
    assert states[kept] == JobState.ADMITTED and report.admitted == 1

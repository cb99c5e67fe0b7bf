"""What an admission cycle reads: queued jobs as columns, and as entities only the jobs it changes.

Loading every queued job as a ``Job`` entity each cycle was most of a cycle's time with thousands
queued (a submit storm, the thousand-host benchmark); these tests pin the cheaper read and the race
it must keep right.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from sqlalchemy import event, func, select

from partitioner.types import GpuMode
from queue_service.admitter import read
from queue_service.db.models import Allocation, Gpu, Job, JobState, Node, NodeStatus
from queue_service.services.convert import RUNTIME_LABEL
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


def test_the_cluster_read_carries_every_column_it_decides_on(ctx, api, actors) -> None:
    """``build_cluster`` reads nodes, GPUs and live allocations as columns with the JSON as text, decoded once
    per distinct text: layouts, peers, MPS status, labels and runtimes must still come through per GPU, and
    the nodes left out must say why."""
    register(api, actors.admin, "a", "h100-80gb:2", runtimes=["process", "docker"])
    register(api, actors.admin, "b", "h100-80gb:1")
    register(api, actors.admin, "c")  # no GPUs
    register(api, actors.admin, "d", "h100-80gb:1")
    register(api, actors.admin, "e", "h100-80gb:1")
    job = api.post("/v1/jobs", json=job_body(), headers=auth(actors.admin)).json()["id"]
    with ctx.sessions() as session:
        nodes = {n.name: n for n in session.scalars(select(Node))}
        gpus = {(g.node_id, g.index): g for g in session.scalars(select(Gpu))}
        g0, g1 = gpus[(nodes["a"].id, 0)], gpus[(nodes["a"].id, 1)]
        g0.mode, g0.nvlink_peers = "mig", [1]
        g0.mig_layout = [{"profile": "3g.40gb", "start": 0, "uuid": "MIG-x"},
                         {"profile": "1g.10gb", "start": 4, "shared": True}]
        g0.mps_status = {"MIG-x": "failed: daemon gone"}
        g1.mps_status = {g1.uuid: "failed: no pipe"}
        g1.nvlink_peers = [0]
        nodes["a"].labels = {"rack": "r1", "zone": "z"}
        nodes["b"].cordoned = True
        nodes["d"].lease_expires_at = datetime(2000, 1, 1)
        nodes["e"].status = NodeStatus.DOWN
        gpus[(nodes["b"].id, 0)].mig_layout = g0.mig_layout  # the same text on another node: decoded once, shared
        common = {"job_id": job, "attempt": 1, "node_id": nodes["a"].id}
        session.add_all([
            Allocation(**common, kind="blocks", gpu_uuid=g0.uuid, blocks=30, gpu_memory_mib=2048, mig_start=4,
                       mig_profile="1g.10gb", cpus_milli=500, memory_mib=1024),
            Allocation(**common, kind="mig", gpu_uuid=g0.uuid, mig_start=2, mig_profile="2g.20gb", slot="mig2"),
            Allocation(**common, kind="gpu", gpu_uuid=g1.uuid, slot="gpu", cpus_milli=1000, memory_mib=4096),
            Allocation(**common, kind="gpu", gpu_uuid=g1.uuid, slot="old", cpus_milli=9000,
                       released_at=datetime(2020, 1, 1)),  # released: holds nothing
        ])
        session.commit()
        cluster = read.build_cluster(session)
        everything = read.build_cluster(session, registered=True)
    assert sorted(cluster.unschedulable) == ["b cordoned", "d not heartbeating", "e down"]
    assert [n.name for n in cluster.nodes] == ["a", "c"] and [n.name for n in everything.nodes] == ["a", "b", "c", "d"]
    a, c = cluster.nodes
    assert c.gpus == () and c.free_cpus_milli == c.cpus_milli
    assert a.free_cpus_milli == a.cpus_milli - 1500 and a.free_memory_mib == a.memory_mib - 5120
    assert a.labels == (("rack", "r1"), ("zone", "z"), (RUNTIME_LABEL + "docker", "yes"),
                        (RUNTIME_LABEL + "process", "yes"))
    m, w = a.gpus
    assert (m.index, m.mode, m.nvlink_peers, m.held, m.used_blocks, m.mps_failed) == (
        0, GpuMode.MIG, (1,), False, 30, "")
    assert (w.index, w.mode, w.nvlink_peers, w.held, w.mps_failed) == (1, GpuMode.EXCLUSIVE, (0,), True, "no pipe")
    by_start = {i.start: i for i in m.mig_instances}
    assert sorted(by_start) == [0, 2, 4]  # the layout's two, and the held one it does not list
    assert by_start[0].mps_failed == "daemon gone" and not by_start[0].held and by_start[0].uuid == "MIG-x"
    assert by_start[2].held and by_start[2].profile == "2g.20gb"
    assert by_start[4].mode == GpuMode.SHARED and (by_start[4].used_blocks, by_start[4].used_memory_mib) == (30, 2048)
    with ctx.sessions() as session:
        held = session.get(Job, job).workload
    # one entry per allocation on a GPU and on a MIG instance, one per gang member on the node
    assert (m.workloads, w.workloads, a.workloads) == ((held, held), (held,), (held,))
    assert by_start[2].workloads == by_start[4].workloads == (held,) and by_start[0].workloads == ()
    b = everything.nodes[1].gpus[0]
    assert [(i.start, i.profile, i.held, i.mode) for i in b.mig_instances] == [
        (0, "3g.40gb", False, GpuMode.EXCLUSIVE), (4, "1g.10gb", False, GpuMode.SHARED)]

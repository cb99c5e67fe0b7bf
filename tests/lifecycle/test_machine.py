"""A hypothesis state machine over the lifecycle API (SQLite): a fake agent, users and operators poke at jobs.

Rules: submit (whole GPUs, shares of a GPU, gangs; three priority classes,
and production jobs that arrive while preemptible ones run, so the admitter
preempts), admission cycles, start claims and exit reports
(any reason and code, on current or stale attempts), cancel, reclaim with and
without requeue, and node loss (an agent that comes back without its
attempts, or a lease that runs out) and revival.

Invariants after every step:

- no job is queued while it holds a live allocation, and a queued job has no attempt in progress;
- every final job holds nothing: no live allocation, every attempt ended;
- a live (admitted or running) job holds its current attempt, which has not ended, and nothing else;
- ``events.replay`` of each job's events is its current state; each admission is one ``admit`` event;
- live allocations never exceed a GPU: a whole GPU is held once, blocks ≤ 100, memory ≤ the GPU's;
- a refused report (409) changed no row of its job.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select, update

from partitioner.types import BLOCKS_PER_GPU
from queue_service.app import create_app
from queue_service.context import ServiceContext
from queue_service.db.migrate import upgrade
from queue_service.db.models import Allocation, Attempt, Gpu, Job, JobEvent, Node, NodeStatus, Role
from queue_service.dispatch import make_broker
from queue_service.lifecycle.events import replay
from queue_service.lifecycle.states import FINAL_STATES, LIVE_STATES, AttemptState, JobState
from queue_service.services import projects, tokens
from queue_service.settings import Settings
from tests.api.helpers import auth
from tests.builders import inventory, job_body
from tests.lifecycle.helpers import expire_lease, rows

NODES = {"n1": "h100-80gb:2", "n2": "h100-80gb:1"}
RESOURCES = st.sampled_from([
    {"gpus": 1}, {"gpus": 2}, {"blocks": 50, "gpu_memory_mib": 30000}, {"blocks": 30, "gpu_memory_mib": 8000},
    {"gpus": 1, "replicas": 2},
])
CLASSES = st.sampled_from(["experiment", "normal", "production"])
EXITS = st.sampled_from([
    (0, "exited"), (1, "exited"), (143, "stopped"), (None, "timed_out"), (137, "oom_killed"),
    (None, "start_failed"), (None, "lost"),
])


@dataclass(frozen=True)
class _World:
    """Built once per test run: a migrated database with a project, tokens and the nodes, and the app."""

    template: Path
    app: FastAPI
    admin: str
    operator: str
    agents: dict[str, str]  # one agent token per node, bound to it


def _settings(directory: Path, url: str) -> Settings:
    return Settings(data_dir=directory / "data", database_url=url, broker_url="memory://", min_run_s=0.0)


@cache
def _world() -> _World:
    directory = Path(tempfile.mkdtemp(prefix="gpuq-lifecycle-"))
    template = directory / "template.db"
    url = f"sqlite:///{template}"
    upgrade(url)
    ctx = ServiceContext.build(_settings(directory, url))
    with ctx.sessions() as session, session.begin():
        projects.ensure(session, name="default")
        made: dict[str, Any] = {key: tokens.create(session, role=role, name=key, projects=[], actor="test")[1]
                                for key, role in (("admin", Role.ADMIN), ("operator", Role.OPERATOR))}
        made["agents"] = {name: tokens.create(session, role=Role.AGENT, name=f"agent-{name}", node_name=name,
                                              actor="test")[1] for name in NODES}
    app = create_app(ctx, run_admitter=False)  # the routes read app.state.ctx: each example swaps in its own
    client = TestClient(app)
    for name, gpus in NODES.items():
        response = client.post("/v1/agent/register", json={"inventory": inventory(name, gpus).to_dict()},
                               headers=auth(made["agents"][name]))
        assert response.status_code == 200, response.text
    ctx.engine.dispose()
    return _World(template, app, **made)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        world = _world()
        self.admin, self.operator, self.agents = world.admin, world.operator, world.agents
        self.directory = Path(tempfile.mkdtemp(prefix="gpuq-machine-"))
        shutil.copy(world.template, self.directory / "gpuq.db")
        self.ctx = ServiceContext.build(_settings(self.directory, f"sqlite:///{self.directory / 'gpuq.db'}"))
        with self.ctx.sessions() as session, session.begin():  # the template's leases ran out long ago
            session.execute(update(Node).values(lease_expires_at=datetime(2100, 1, 1)))
        world.app.state.ctx = self.ctx
        self.client = TestClient(world.app)
        self.jobs: list[str] = []
        self.refs: set[tuple[str, int, int, str]] = set()  # every (job, attempt, replica, node) ever allocated

    def teardown(self) -> None:
        self.client.close()
        make_broker("memory://").flush_all()
        self.ctx.engine.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _register(self, name: str) -> None:
        response = self.client.post("/v1/agent/register", json={"inventory": inventory(name, NODES[name]).to_dict()},
                                    headers=auth(self.agents[name]))
        assert response.status_code == 200, response.text

    def _learn_refs(self) -> None:
        with self.ctx.sessions() as session:
            self.refs |= set(session.execute(
                select(Allocation.job_id, Allocation.attempt, Allocation.replica, Node.name)
                .join(Node, Node.id == Allocation.node_id)
            ).all())

    def _current_refs(self) -> list[tuple[str, int, int, str]]:
        """What the fake agents run or are about to: live allocations of live jobs' current attempts."""
        with self.ctx.sessions() as session:
            return self._order(set(session.execute(
                select(Allocation.job_id, Allocation.attempt, Allocation.replica, Node.name)
                .join(Node, Node.id == Allocation.node_id).join(Job, Job.id == Allocation.job_id)
                .where(Allocation.released_at.is_(None), Allocation.attempt == Job.attempt,
                       Job.state.in_([s.value for s in LIVE_STATES]))
            ).all()))

    def _report(self, path: str, ref: tuple[str, int, int, str], **extra: Any) -> None:
        """Post an agent report; a refusal must be a 409 (or 404 never: the job exists) and change nothing."""
        job_id, attempt, replica, node_name = ref
        before = rows(self.ctx, job_id)
        body = {"job_id": job_id, "attempt": attempt, "replica": replica, "node_name": node_name} | extra
        response = self.client.post(path, json=body, headers=auth(self.agents[node_name]))
        assert response.status_code in (200, 409), (path, body, response.text)
        if response.status_code == 409:
            assert response.json().get("state") == before["job"]["state"], (path, body, response.json())
            assert rows(self.ctx, job_id) == before, f"a refused {path} changed job {job_id}"

    def _order(self, refs: set[tuple[str, int, int, str]] | list[tuple[str, int, int, str]]) -> list[Any]:
        """Refs in submission order: job ids are random, and hypothesis must see the same choices each run."""
        index = {job_id: i for i, job_id in enumerate(self.jobs)}
        return sorted(refs, key=lambda r: (index[r[0]], *r[1:]))

    def _pick(self, data: st.DataObject, choices: list[Any], label: str) -> Any:
        return data.draw(st.sampled_from(choices), label=label)

    def _down(self) -> list[str]:
        with self.ctx.sessions() as session:
            return sorted(session.scalars(select(Node.name).where(Node.status == NodeStatus.DOWN)))

    def _running_experiments(self) -> bool:
        with self.ctx.sessions() as session:
            return session.scalar(select(Job.id).where(Job.state == JobState.RUNNING, Job.stop_action.is_(None),
                                                       Job.priority_class == "experiment").limit(1)) is not None

    def _queued(self) -> bool:
        with self.ctx.sessions() as session:
            return session.scalar(select(Job.id).where(Job.state == JobState.QUEUED).limit(1)) is not None

    # -- rules ---------------------------------------------------------------------------------------------------

    @initialize(jobs=st.lists(st.tuples(RESOURCES, CLASSES), min_size=1, max_size=4))
    def some_jobs_admitted(self, jobs: list[tuple[dict[str, int], str]]) -> None:
        for resources, klass in jobs:
            self.submit(resources, klass)
        self.admit()

    @rule(resources=RESOURCES, klass=CLASSES)
    def submit(self, resources: dict[str, int], klass: str) -> None:
        response = self.client.post("/v1/jobs", json=job_body(resources=resources, priority_class=klass),
                                    headers=auth(self.admin))
        # 422: it can never run on the nodes up now (a 2-GPU job while n1 is down).
        assert response.status_code in (201, 422), response.text
        if response.status_code == 201:
            self.jobs.append(response.json()["id"])

    @precondition(lambda self: self._queued())
    @rule()
    def admit(self) -> None:
        self.ctx.admitter.run_once()
        self._learn_refs()

    @precondition(lambda self: self._running_experiments())
    @rule(gpus=st.sampled_from([1, 2]))
    def urgent_job_arrives(self, gpus: int) -> None:
        """A production job while preemptible ones run: the cycle may stop them (cause ``preempt``)."""
        self.submit({"gpus": gpus}, "production")
        self.admit()

    @precondition(lambda self: self._current_refs())
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        self._report("/v1/agent/started", self._pick(data, self._current_refs(), "start"))

    @precondition(lambda self: self._current_refs())
    @rule(data=st.data(), outcome=EXITS)
    def exit(self, data: st.DataObject, outcome: tuple[int | None, str]) -> None:
        code, reason = outcome
        self._report("/v1/agent/exited", self._pick(data, self._current_refs(), "exit"), exit_code=code, reason=reason)

    @precondition(lambda self: self.refs)
    @rule(data=st.data(), outcome=EXITS, start=st.booleans())
    def stale_report(self, data: st.DataObject, outcome: tuple[int | None, str], start: bool) -> None:
        """A report about any attempt ever allocated (late, duplicated, or about a lost attempt)."""
        ref = self._pick(data, self._order(self.refs), "stale")
        if start:
            self._report("/v1/agent/started", ref)
        else:
            code, reason = outcome
            self._report("/v1/agent/exited", ref, exit_code=code, reason=reason)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), how=st.sampled_from(["cancel", "reclaim", "reclaim and requeue"]))
    def stop_job(self, data: st.DataObject, how: str) -> None:
        """A user cancels, or an operator reclaims (with or without requeue), any job in any state."""
        job_id = self._pick(data, self.jobs, how)
        if how == "cancel":
            response = self.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(self.admin))
        else:
            response = self.client.post("/v1/reclaim", json={"job": job_id, "requeue": how != "reclaim",
                                                             "grace_s": 0}, headers=auth(self.operator))
        assert response.status_code == 200, response.text

    @rule(node=st.sampled_from(sorted(NODES)), how=st.sampled_from(["restart", "restart keeping some", "lease"]),
          data=st.data())
    def node_lost(self, node: str, how: str, data: st.DataObject) -> None:
        """Its agent comes back with none (or some) of what it ran, or its lease runs out."""
        if how == "lease":
            expire_lease(self.ctx, node)
            self.ctx.admitter.reconcile()
            return
        mine = [r for r in self._current_refs() if r[3] == node]
        kept = data.draw(st.lists(st.sampled_from(mine), unique=True), label="kept") if how != "restart" and mine \
            else []
        body = {"node_name": node, "attempts": [{"job_id": j, "attempt": a, "replica": r} for j, a, r, _n in kept]}
        response = self.client.post("/v1/agent/adopt", json=body, headers=auth(self.agents[node]))
        assert response.status_code == 200, response.text

    @precondition(lambda self: self._down())
    @rule(data=st.data())
    def node_returns(self, data: st.DataObject) -> None:
        self._register(self._pick(data, self._down(), "returns"))

    # -- invariants ----------------------------------------------------------------------------------------------

    @invariant()
    def lifecycle_rows_agree(self) -> None:
        with self.ctx.sessions() as session:
            jobs = {j.id: j for j in session.scalars(select(Job))}
            attempts: dict[str, list[Attempt]] = defaultdict(list)
            for a in session.scalars(select(Attempt)):
                attempts[a.job_id].append(a)
            live: dict[str, list[Allocation]] = defaultdict(list)
            for row in session.scalars(select(Allocation).where(Allocation.released_at.is_(None))):
                live[row.job_id].append(row)
            history: dict[str, list[JobEvent]] = defaultdict(list)
            for e in session.scalars(select(JobEvent).order_by(JobEvent.id)):
                history[e.job_id].append(e)
            for job_id, job in jobs.items():
                state = JobState(job.state)
                open_attempts = [a.number for a in attempts[job_id] if a.ended_at is None]
                where = (job_id, state.value, job.attempt, job.reason)
                if state is JobState.QUEUED:
                    assert live[job_id] == [], ("queued but holding", where)
                    assert open_attempts == [], ("queued with an attempt in progress", where)
                if state in FINAL_STATES:
                    assert live[job_id] == [], ("final but holding", where)
                    assert open_attempts == [], ("final with an attempt in progress", where)
                    assert all(AttemptState(a.state).ended for a in attempts[job_id]), where
                if state in LIVE_STATES:
                    assert open_attempts == [job.attempt], ("live without its attempt", where, open_attempts)
                    assert live[job_id], ("live without an allocation", where)
                    assert {r.attempt for r in live[job_id]} == {job.attempt}, ("holds an old attempt", where)
                assert replay(history[job_id]) == state, (where, [(e.event, e.to_state) for e in history[job_id]])
                assert sum(e.event == "admit" for e in history[job_id]) == job.attempt, where
                assert len(attempts[job_id]) == job.attempt, where

    @invariant()
    def gpus_are_never_overcommitted(self) -> None:
        with self.ctx.sessions() as session:
            memory = dict(session.execute(select(Gpu.uuid, Gpu.memory_mib)).all())
            held: dict[str, list[Allocation]] = defaultdict(list)
            for row in session.scalars(select(Allocation).where(Allocation.released_at.is_(None),
                                                                Allocation.gpu_uuid.is_not(None))):
                held[row.gpu_uuid].append(row)
            for uuid, on_gpu in held.items():
                whole = [r for r in on_gpu if r.kind == "gpu"]
                assert not whole or len(on_gpu) == 1, ("a whole GPU shared", uuid, [r.job_id for r in on_gpu])
                assert sum(r.blocks for r in on_gpu if r.kind != "gpu") <= BLOCKS_PER_GPU, uuid
                assert sum(r.gpu_memory_mib for r in on_gpu) <= memory[uuid], uuid

    @invariant()
    def down_nodes_hold_nothing_new(self) -> None:
        # A node marked down has had its attempts lost: nothing live stays on it.
        with self.ctx.sessions() as session:
            stuck = session.scalars(
                select(Allocation.job_id).join(Node, Node.id == Allocation.node_id)
                .where(Allocation.released_at.is_(None), Node.status == NodeStatus.DOWN)
            ).all()
            assert stuck == [], stuck


LifecycleMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], derandomize=True,
)
test_lifecycle_machine = LifecycleMachine.TestCase

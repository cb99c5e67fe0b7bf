"""Ledger properties (hypothesis), on random admit / start / release histories with a controlled clock.

- per project, billed resource-seconds equal the sum over allocations of held × (end − start);
- per GPU, what is billed at any moment never exceeds its capacity (so neither does the total);
- no two intervals of one exclusive slot overlap, and an allocation has at most one interval;
- a price list added later never changes the cost of a closed period.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from queue_service.billing import ledger, reports
from queue_service.billing.prices import PriceBook
from queue_service.db.billing_models import GpuPrice, UsageInterval
from queue_service.db.models import Allocation, Base, Gpu, Job, Node, Project

EPOCH = datetime(2026, 11, 1)
GPUS = ("gpu-0", "gpu-1")
PROJECTS = ("alpha", "beta", "gamma")

# One step: (seconds to advance, action, project index, kind, blocks, gpu index, which job)
steps = st.lists(
    st.tuples(
        st.integers(0, 7200),
        st.sampled_from(["admit", "start", "release"]),
        st.integers(0, len(PROJECTS) - 1),
        st.sampled_from(["gpu", "blocks"]),
        st.integers(1, 100),
        st.integers(0, len(GPUS) - 1),
        st.integers(0, 50),
    ),
    max_size=40,
)


@dataclass
class Model:
    """The obvious bookkeeping the ledger must agree with."""

    now: datetime = EPOCH
    free_blocks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GPUS, 100))
    jobs: list[dict] = field(default_factory=list)  # job_id, project, gpu, kind, blocks, started, ended, alloc


def _session() -> Session:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = Session(engine)
    session.add(Node(id="n1", name="n1"))
    session.add_all(Project(id=p, name=p) for p in PROJECTS)
    session.add_all(Gpu(uuid=u, node_id="n1", index=i, name="H100", model="h100-80gb", memory_mib=81920)
                    for i, u in enumerate(GPUS))
    session.flush()
    return session


def _run(history) -> tuple[Session, Model]:
    session, model = _session(), Model()
    for n, (advance, action, p, kind, blocks, g, pick) in enumerate(history):
        model.now += timedelta(seconds=advance)
        live = [j for j in model.jobs if j["ended"] is None]
        if action == "admit":
            gpu = GPUS[g]
            need = 100 if kind == "gpu" else blocks
            if model.free_blocks[gpu] < need:
                continue
            model.free_blocks[gpu] -= need
            job = Job(id=f"j{n}", name="j", project_id=PROJECTS[p], command=["true"], priority_class="normal",
                      priority=0, attempt=1)
            alloc = Allocation(id=f"a{n}", job_id=job.id, attempt=1, node_id="n1", kind=kind, gpu_uuid=gpu,
                               slot="0" if kind == "gpu" else "", blocks=need if kind == "blocks" else 0)
            session.add_all([job, alloc])
            session.flush()
            model.jobs.append({"job": job, "alloc": alloc, "project": PROJECTS[p], "gpu": gpu, "need": need,
                               "started": None, "ended": None})
        elif live and action == "start":
            j = live[pick % len(live)]
            ledger.open_intervals(session, job=j["job"], attempt=1, replica=0, at=model.now)
            if j["started"] is None:
                j["started"] = model.now
        elif live and action == "release":  # finish, cancel or preemption: all release the allocation
            j = live[pick % len(live)]
            j["alloc"].released_at = model.now
            ledger.close_intervals(session, allocation_ids=[j["alloc"].id], at=model.now)
            j["ended"] = model.now
            model.free_blocks[j["gpu"]] += j["need"]
    model.now += timedelta(seconds=60)
    return session, model


def _held(j: dict) -> float:
    return j["need"] / 100  # GPU-equivalents: a whole GPU is 100 blocks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_billed_seconds_equal_held_times_duration(history) -> None:
    session, model = _run(history)
    report = reports.usage(session, project_ids=None, start=EPOCH - timedelta(days=1),
                           end=model.now + timedelta(days=1), group_by="project", now=model.now)
    billed = {r.key: r.gpu_equivalent_hours * 3600 for r in report.rows}
    expected: dict[str, float] = {}
    for j in model.jobs:
        if j["started"] is None:
            continue  # never started: costs nothing
        end = j["ended"] or model.now  # running: counted up to now
        expected[j["project"]] = expected.get(j["project"], 0.0) + _held(j) * (end - j["started"]).total_seconds()
    expected = {k: v for k, v in expected.items() if v > 0}
    assert billed.keys() == expected.keys()
    for project, seconds in expected.items():
        assert abs(billed[project] - seconds) < 1e-6 * max(1.0, seconds)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_per_gpu_never_over_capacity_and_no_overlaps(history) -> None:
    session, model = _run(history)
    rows = list(session.scalars(select(UsageInterval)))
    assert len({r.allocation_id for r in rows}) == len(rows)
    for gpu in GPUS:
        mine = [r for r in rows if r.gpu_uuid == gpu]
        events = sorted({r.started_at for r in mine} | {r.ended_at or model.now for r in mine})
        for t in events:  # capacity at every moment something changes
            held = sum(ledger.gpu_equivalents(r) for r in mine if r.started_at <= t < (r.ended_at or model.now))
            assert held <= 1.0 + 1e-9
        whole = sorted((r.started_at, r.ended_at or model.now) for r in mine if r.kind == "gpu")
        for (_s1, e1), (s2, _e2) in itertools.pairwise(whole):
            assert e1 <= s2, "two intervals of one exclusive slot overlap"
        elapsed = (model.now - EPOCH).total_seconds()
        total = sum(ledger.gpu_equivalents(r) * ((r.ended_at or model.now) - r.started_at).total_seconds()
                    for r in mine)
        assert total <= elapsed + 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.floats(0, 1000), st.integers(0, 10**6))
def test_a_later_price_never_changes_a_closed_period(history, new_price, after_s) -> None:
    session, model = _run(history)
    session.add(GpuPrice(gpu_model="h100-80gb", effective_from=EPOCH - timedelta(days=30), gpu_hour=3.0))
    session.flush()
    closed = model.now
    rows = list(session.scalars(select(UsageInterval)))
    before = [PriceBook.load(session).cost(r, max(r.started_at, EPOCH), min(r.ended_at or closed, closed))
              for r in rows]
    session.add(GpuPrice(gpu_model="h100-80gb", effective_from=closed + timedelta(seconds=after_s),
                         gpu_hour=new_price, block_hour=new_price))
    session.flush()
    after = [PriceBook.load(session).cost(r, max(r.started_at, EPOCH), min(r.ended_at or closed, closed))
             for r in rows]
    assert before == after

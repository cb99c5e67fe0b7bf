"""Rollup-based reports equal the interval-by-interval reference (hypothesis), and groups add up to the total.

Random ledgers: jobs of three projects, owners, workload classes and labels; intervals of random length
(some still open, some of zero length), jobs preempted and restarted (one interval per attempt), on two
GPU models whose price lists change inside the window. Every interval is closed through
``ledger.close_intervals``, the path that writes the rollups, in time order or shuffled (the job counts
re-link a job's later days when an earlier one arrives late). Random windows, exact to the microsecond,
some ending at "now" (this month so far); one project, two, or all.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from queue_service.billing import ledger, reports, rollups
from queue_service.billing.prices import PriceBook
from queue_service.db.billing_models import GpuPrice, UsageInterval, UsageRollup
from queue_service.db.models import ApiToken, Base, Project

EPOCH = datetime(2026, 11, 1)
PROJECTS = ("alpha", "beta", "gamma")
MODELS = ("h100-80gb", "a100-40gb")
WORKLOADS = ("training", "inference", "batch")
LABELS: tuple[dict[str, str], ...] = ({}, {"feature": "search"}, {"feature": "ads", "team": "x"}, {"team": "y"})
GROUPS = ("day", "user", "gpu_model", "project", "workload", "label:feature", "label:team")
NUMBERS = ("gpu_hours", "block_hours", "mig_hours", "gpu_equivalent_hours", "gpu_memory_gib_hours", "cpu_hours",
           "ram_gib_hours", "cost")
SPAN_S = 4 * 24 * 3600

job_st = st.tuples(
    st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 3),  # project, owner, workload, labels
    st.sampled_from(["gpu", "blocks", "mig", "cpu"]), st.integers(0, 1), st.integers(1, 100),  # kind, model, blocks
    st.lists(st.tuples(st.integers(0, SPAN_S), st.integers(0, 40 * 3600)), min_size=1, max_size=3),  # attempts
    st.booleans(),  # the last attempt is still running
)
window_st = st.tuples(st.integers(-3600, SPAN_S + 7200), st.integers(1, SPAN_S + 4 * 3600))
prices_st = st.lists(st.tuples(st.integers(0, 1), st.integers(-86400, SPAN_S), st.integers(1, 9)), max_size=4)


def _session() -> Session:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = Session(engine)
    session.add_all(Project(id=f"p-{p}", name=p) for p in PROJECTS)
    session.add_all(ApiToken(id=f"t{i}", name=f"user{i}", token_hash=f"h{i}", role="member") for i in range(2))
    session.flush()
    return session


def _ledger(session: Session, jobs, prices, order: random.Random | None = None, fold: str = "never") -> datetime:
    """Write the jobs' intervals, close the ended ones through the ledger; returns "now". ``fold``: the
    appended deltas are folded into the sums ``never``, at the ``end``, or after ``each`` close."""
    session.add(GpuPrice(gpu_model="*", effective_from=EPOCH - timedelta(days=9), gpu_hour=0, cpu_hour=0.5,
                         ram_gib_hour=0.01))
    for m, model in enumerate(MODELS):
        session.add(GpuPrice(gpu_model=model, effective_from=EPOCH - timedelta(days=9), gpu_hour=2.0 + m,
                             mig_profile_hour={"3g.40gb": 1.25}))
    for m, at_s, hour in prices:
        session.add(GpuPrice(gpu_model=MODELS[m], effective_from=EPOCH + timedelta(seconds=at_s), gpu_hour=hour,
                             block_hour=hour / 90 if hour % 2 else None, gpu_memory_gib_hour=0.001 * hour))
    session.flush()
    now = EPOCH + timedelta(seconds=SPAN_S + 3 * 3600)
    closes: list[tuple[datetime, str]] = []
    n = 0
    for j, (p, owner, workload, labels, kind, m, blocks, attempts, running) in enumerate(jobs):
        t = 0
        for number, (gap_s, length_s) in enumerate(attempts, start=1):
            start = EPOCH + timedelta(seconds=t + gap_s, microseconds=j * 7 + number)  # preempted, restarted later
            t += gap_s + length_s
            last = number == len(attempts)
            n += 1
            session.add(UsageInterval(
                allocation_id=f"a{n}", job_id=f"j{j}", attempt=number, project_id=f"p-{PROJECTS[p]}",
                project_name=PROJECTS[p], owner_token_id=f"t{owner}" if owner < 2 else None, node_id="n",
                node_name="n", kind=kind, gpu_uuid=None if kind == "cpu" else "g", gpu_model=None if kind == "cpu"
                else MODELS[m], gpus=1 if kind == "gpu" else 0, blocks=blocks if kind == "blocks" else 0,
                gpu_memory_mib=blocks * 400 if kind == "blocks" else 0, mig_profile="3g.40gb" if kind == "mig"
                else None, mig_compute_share=3 / 7 if kind == "mig" else 0.0, cpus_milli=500 * (j % 3),
                memory_mib=1024 * (j % 4), started_at=min(start, now), ended_at=None,
                workload=WORKLOADS[workload], labels_json=rollups.labels_key(LABELS[labels]),
            ))
            if not (last and running):
                closes.append((min(start + timedelta(seconds=length_s), now), f"a{n}"))
    session.flush()
    closes.sort()
    if order is not None:  # replicas and late reports close out of time order: earlier days re-link later ones
        order.shuffle(closes)
    for end, allocation_id in closes:
        ledger.close_intervals(session, allocation_ids=[allocation_id], at=end)
        if fold == "each":
            rollups.fold(session)
    if fold == "end":
        rollups.fold(session)
    return now


def _job_counts(session: Session) -> list[tuple]:
    """The job counts per key but shard, summed and appended alike (zeros left out)."""
    c = rollups.job_count_rows().c
    key = (c.project_id, c.day, c.owner_token_id, c.workload, c.labels_hash, c.prev_day)
    return sorted(tuple(row) for row in session.execute(
        select(*key, func.sum(c.jobs)).group_by(*key).having(func.sum(c.jobs) != 0)))


def _same(a: reports.UsageRow, b: reports.UsageRow, where: str) -> None:
    for name in NUMBERS:
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9, abs=1e-9), (where, name)
    assert (a.jobs, a.allocated_gpu_memory_mib, a.workload, a.labels) == (
        b.jobs, b.allocated_gpu_memory_mib, b.workload, b.labels), where


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=st.lists(job_st, max_size=12), window=window_st, prices=prices_st, projects=st.integers(0, 4),
       order=st.none() | st.randoms(use_true_random=False), so_far=st.booleans(),
       fold=st.sampled_from(["never", "end", "each"]))
def test_rollup_report_equals_interval_report(jobs, window, prices, projects, order, so_far, fold) -> None:
    session = _session()
    now = _ledger(session, jobs, prices, order, fold)
    counted = _job_counts(session)
    rollups.rebuild_job_counts(session)  # what the closes maintained is what the job-days say
    assert _job_counts(session) == counted
    start = EPOCH + timedelta(seconds=window[0], microseconds=window[0] % 997)
    end = start + timedelta(seconds=window[1])
    if so_far and start < now:
        end = now  # this month so far: the window ends mid-day, at the database's "now"
    ids = None if projects == 3 else ["p-alpha", "p-gamma"] if projects == 4 else [f"p-{PROJECTS[projects]}"]
    _compare(session, ids, start, end, now)
    session.close()


def _compare(session: Session, ids: list[str] | None, start: datetime, end: datetime, now: datetime,
             groups: tuple[str, ...] = GROUPS) -> None:
    """The rollup-based report, grouped every way, equals the reference; the budget check equals its total."""
    for group_by in groups:
        fast = reports.usage(session, project_ids=ids, start=start, end=end, group_by=group_by, now=now)
        slow = reports.usage_by_intervals(session, project_ids=ids, start=start, end=end, group_by=group_by,
                                          now=now)
        assert [(r.key, r.project) for r in fast.rows] == [(r.key, r.project) for r in slow.rows], group_by
        for f, s in zip(fast.rows, slow.rows, strict=True):
            _same(f, s, f"{group_by}:{f.key}")
        _same(fast.total, slow.total, f"{group_by}:total")
        if ids is not None and len(ids) == 1:
            totals = reports.project_usage_totals(session, ids[0], start, end, now=now)
            assert totals.gpu_hours == pytest.approx(slow.total.gpu_equivalent_hours, rel=1e-9, abs=1e-9)
            assert totals.cost == pytest.approx(slow.total.cost, rel=1e-9, abs=1e-9)


def test_window_ending_mid_day_counts_intervals_that_started_days_before() -> None:
    """A ragged end crossed by a 3.5-day interval (found by widening steps back from its hour), by short ones,
    and by a zero-length one at the hour; windows ending mid-day, at an hour, and at "now"."""
    session = _session()
    long_job = (0, 0, 0, 0, "gpu", 0, 1, [(3600, int(3.5 * 86400))], False)  # Nov 1 01:00 to Nov 4 13:00
    short = [(i % 2 * 2, i % 3, i % 3, i % 4, ("gpu", "blocks")[i % 2], i % 2, 20,
              [(i * 1500, 5400), (600, 0)], i % 7 == 0) for i in range(200)]  # 90 minutes, then zero-length
    now = _ledger(session, [long_job, *short], [(0, 2 * 86400 + 1234, 4)])
    assert session.query(UsageInterval).filter(UsageInterval.ended_at == UsageInterval.started_at).count() > 0
    for end in (EPOCH + timedelta(days=3, hours=9, minutes=17, seconds=3), EPOCH + timedelta(days=3, hours=13),
                EPOCH + timedelta(days=3, hours=12, minutes=59, microseconds=5), now):
        for start in (EPOCH, EPOCH + timedelta(days=2, hours=8, seconds=1)):
            for ids in (["p-alpha"], ["p-alpha", "p-gamma"], None):
                _compare(session, ids, start, end, now, groups=("day", "project", "workload"))
    session.close()


def test_groups_add_up_to_the_project_total_and_rebuild_matches() -> None:
    """By workload, user and label, every group sums to the total; a rebuild from the ledger gives the same rows."""
    session = _session()
    jobs = [(0, i % 3, i % 3, i % 4, ("gpu", "blocks", "mig")[i % 3], i % 2, 10 + i,
             [(i * 3600, 5400 + i * 60), (1800, 7200)], i % 5 == 0) for i in range(20)]
    now = _ledger(session, jobs, [(0, 86400, 5)])
    start, end = EPOCH + timedelta(minutes=17), EPOCH + timedelta(days=3, minutes=41)
    project = reports.usage(session, project_ids=["p-alpha"], start=start, end=end, group_by="project", now=now)
    assert project.total.gpu_equivalent_hours > 0
    for group_by in ("workload", "user", "label:feature", "label:team", "day", "gpu_model"):
        report = reports.usage(session, project_ids=["p-alpha"], start=start, end=end, group_by=group_by, now=now)
        for name in NUMBERS:
            assert sum(getattr(r, name) for r in report.rows) == pytest.approx(getattr(project.total, name))
        assert report.total.jobs == project.total.jobs == 20
    by_label = reports.usage(session, project_ids=["p-alpha"], start=start, end=end, group_by="label:feature",
                             now=now)
    assert {r.key for r in by_label.rows} == {"(none)", "search", "ads"}
    assert {json.dumps(r.labels) for r in by_label.rows} >= {'{"feature": "ads"}', "{}"}
    rollups.fold(session)
    before = sorted((r.hour, r.labels_hash, r.gpu_model, round(r.cost, 9)) for r in session.query(UsageRollup))
    assert rollups.rebuild(session) == sum(len(j[7]) - (1 if j[8] else 0) for j in jobs)
    after = sorted((r.hour, r.labels_hash, r.gpu_model, round(r.cost, 9)) for r in session.query(UsageRollup))
    assert before == after
    price = PriceBook.load(session).at(MODELS[0], EPOCH + timedelta(days=2))
    assert price is not None and price.gpu_hour == 5
    with pytest.raises(Exception, match="label key"):
        reports.usage(session, project_ids=None, start=start, end=end, group_by="label:Bad Key", now=now)
    session.close()

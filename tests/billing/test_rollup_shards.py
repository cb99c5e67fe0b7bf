"""Exits never queue on a shared usage row: they append deltas (``usage_rollup_deltas``,
``usage_job_count_deltas``) that ``rollups.fold`` adds into the summed rows, split by job
(``rollups.shard``) for the job counts.

Every exit of a busy cluster used to update the same hour's rollup row and the same day's first-day job
count (one project, owner, workload and labels) and hold their locks until its commit. The sums stay
exact (``test_rollup_reports``: reports equal the interval-by-interval reference, folded or not, and a
rebuild gives the same rows); these tests pin the appends, the fold and what they are for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from queue_service.billing import ledger, rollups
from queue_service.db.billing_models import UsageInterval, UsageJobCount, UsageRollup, UsageRollupDelta
from queue_service.db.migrate import upgrade
from queue_service.db.session import normalize_url

HOUR0 = datetime(2026, 11, 2, 9)


def _jobs_on_distinct_shards(n: int) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        found.setdefault(rollups.shard(f"job-{i}"), f"job-{i}")
        i += 1
    return list(found.values())


def _open(session: Session, job_id: str, start: datetime) -> None:
    session.add(UsageInterval(
        allocation_id=f"a-{job_id}", job_id=job_id, attempt=1, replica=0, project_id="p", project_name="p",
        owner_token_id=None, node_id="n", node_name="n", kind="gpu", gpu_uuid="g", gpu_model="h100-80gb",
        slot="", gpus=1, blocks=0, gpu_memory_mib=0, mig_profile=None, mig_start=None, mig_compute_share=0.0,
        cpus_milli=1000, memory_mib=1024, started_at=start, ended_at=None, workload="batch", labels_json="{}",
    ))


def _gpu_seconds(session: Session) -> float:
    """The GPU-seconds summed and appended, read in one statement as reports read them."""
    return session.scalar(select(func.sum(rollups.rollup_rows().c.gpu_seconds))) or 0.0


def _close_while_another_is_open(engine: Engine, held: tuple[str, datetime], other: tuple[str, datetime], *,
                                 after_close: Callable[[Session], None] = lambda _s: None) -> None:
    """Close ``held``'s interval in a transaction left open (then ``after_close(holder)``), then ``other``'s in
    a second one that must commit within 2 s (a lock wait fails it), then the first commit."""
    holder, second = Session(engine), Session(engine)
    try:
        ledger.close_intervals(holder, allocation_ids=[f"a-{held[0]}"], at=held[1])
        holder.flush()
        after_close(holder)
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        ledger.close_intervals(second, allocation_ids=[f"a-{other[0]}"], at=other[1])
        second.commit()
        holder.commit()
    finally:
        holder.close()
        second.close()


def test_shard_is_stable_and_in_range() -> None:
    # CRC-32, not hash(): every API process and a rebuild must put a job in the same shard
    assert rollups.shard("job-0") == rollups.shard("job-0")
    assert {rollups.shard(f"j{i}") for i in range(500)} == set(range(rollups.SHARDS))


def test_closes_in_one_hour_spread_over_the_jobs_shards_and_add_up(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    jobs = _jobs_on_distinct_shards(4)
    with Session(engine) as session:
        for job in jobs:
            _open(session, job, HOUR0)
        session.flush()
        for job in jobs:  # each held one GPU for 10 minutes, inside one hour: one key, four jobs
            ledger.close_intervals(session, allocation_ids=[f"a-{job}"], at=HOUR0 + timedelta(minutes=10))
        session.flush()
        assert _gpu_seconds(session) == pytest.approx(4 * 600), "read with the deltas, before any fold"
        assert session.scalar(select(func.count()).select_from(UsageRollup)) == 0, "an exit only appends"
        assert rollups.fold(session) == 1 + 4  # one transaction: its rollup delta per key, a job count per job
        assert session.scalar(select(func.count()).select_from(UsageRollupDelta)) == 0
        assert rollups.fold(session) == 0
        rows = session.execute(select(UsageRollup.shard, UsageRollup.gpu_seconds)).all()
        assert rows == [(0, pytest.approx(4 * 600))]  # the rollup key has one shard: one row, the sum
        counts = session.execute(select(UsageJobCount.shard, UsageJobCount.jobs)).all()
        assert sorted(s for s, _ in counts) == sorted(rollups.shard(j) for j in jobs)
        assert sum(n for _, n in counts) == 4
        session.commit()
    engine.dispose()


def test_exits_of_two_jobs_of_one_day_do_not_wait_for_each_other(db_url: str) -> None:
    """One close holds its transaction open; another job's close of the same day and key, in the next hour
    (another rollup row), commits at once: the day's job count is split by job."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite has one writer at a time whatever the rows")
    upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    first, second = _jobs_on_distinct_shards(2)
    with Session(engine) as session:
        _open(session, first, HOUR0)
        _open(session, second, HOUR0 + timedelta(hours=1))
        session.commit()
    # before the shards the second close waited for the holder's commit
    _close_while_another_is_open(engine, (first, HOUR0 + timedelta(minutes=5)),
                                 (second, HOUR0 + timedelta(hours=1, minutes=7)))
    with Session(engine) as session:
        assert _gpu_seconds(session) == pytest.approx(300 + 420)
        rollups.fold(session)
        session.commit()
        assert session.scalar(select(func.count()).select_from(UsageRollup)) == 2
    engine.dispose()


def test_a_close_holds_no_rollup_row_even_with_its_deltas_written(db_url: str) -> None:
    """The hour's rollup row is one row every exit added to: an exit appends a delta instead, so a
    transaction that closed an interval and wrote its deltas (a read of the rollups writes them) holds no
    row another close of the same hour and key waits for."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite has one writer at a time whatever the rows")
    upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    first, second = _jobs_on_distinct_shards(2)
    with Session(engine) as session:
        _open(session, first, HOUR0)
        _open(session, second, HOUR0)
        session.commit()
    def reads_its_own(holder: Session) -> None:  # pending contributions go in before a rollup read
        assert _gpu_seconds(holder) == pytest.approx(300)

    # the holder closes and writes its deltas, and stays open; the second close must not wait for it
    _close_while_another_is_open(engine, (first, HOUR0 + timedelta(minutes=5)), (second, HOUR0 + timedelta(minutes=7)),
                                 after_close=reads_its_own)
    with Session(engine) as session:
        assert _gpu_seconds(session) == pytest.approx(300 + 420)
        rollups.fold(session)
        session.commit()
        assert session.scalar(select(func.sum(UsageRollup.gpu_seconds))) == pytest.approx(300 + 420)
        assert session.scalar(select(func.count()).select_from(UsageRollup)) == 1
    engine.dispose()


def test_a_fold_takes_only_committed_deltas_and_loses_none(db_url: str) -> None:
    """A fold while an exit's transaction is open (its deltas written, not committed) takes what was
    committed; the open one's deltas stay for the next fold. Read in one statement, the sums never count
    a delta twice or drop it, before, between and after the folds."""
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent transactions: SQLite has one writer at a time")
    upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    done, open_ = _jobs_on_distinct_shards(2)
    with Session(engine) as session:
        _open(session, done, HOUR0)
        _open(session, open_, HOUR0)
        session.commit()
        ledger.close_intervals(session, allocation_ids=[f"a-{done}"], at=HOUR0 + timedelta(minutes=5))
        session.commit()
    holder = Session(engine)
    try:
        ledger.close_intervals(holder, allocation_ids=[f"a-{open_}"], at=HOUR0 + timedelta(minutes=7))
        assert _gpu_seconds(holder) == pytest.approx(300 + 420)  # its deltas are written now, uncommitted
        with Session(engine) as folder:
            folder.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert rollups.fold(folder) == 2  # the committed close's rollup and job-count deltas only
            folder.commit()
            assert _gpu_seconds(folder) == pytest.approx(300)
        holder.commit()
    finally:
        holder.close()
    with Session(engine) as session:
        assert _gpu_seconds(session) == pytest.approx(300 + 420)
        assert rollups.fold(session) == 2
        session.commit()
        assert session.scalar(select(func.sum(UsageRollup.gpu_seconds))) == pytest.approx(300 + 420)
        assert session.scalar(select(func.sum(UsageJobCount.jobs))) == 2
        assert session.scalar(select(func.count()).select_from(UsageRollupDelta)) == 0
    engine.dispose()


def test_a_rolled_back_close_adds_nothing(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(normalize_url(db_url))
    kept, undone, nested = _jobs_on_distinct_shards(3)
    with Session(engine) as session:
        for job in (kept, undone, nested):
            _open(session, job, HOUR0)
        session.commit()
    with Session(engine) as session:
        ledger.close_intervals(session, allocation_ids=[f"a-{undone}"], at=HOUR0 + timedelta(minutes=5))
        session.rollback()  # the whole transaction: its pending contributions go with it
    with Session(engine) as session:
        with pytest.raises(RuntimeError), session.begin_nested():  # a savepoint's close is written at once...
            ledger.close_intervals(session, allocation_ids=[f"a-{nested}"], at=HOUR0 + timedelta(minutes=6))
            raise RuntimeError("undo the savepoint")  # ...and undone with it
        ledger.close_intervals(session, allocation_ids=[f"a-{kept}"], at=HOUR0 + timedelta(minutes=10))
        session.commit()
    with Session(engine) as session:
        assert _gpu_seconds(session) == pytest.approx(600)
        assert session.scalar(select(func.sum(rollups.job_count_rows().c.jobs))) == 1
    engine.dispose()

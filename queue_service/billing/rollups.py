"""Usage rollups: closed ledger intervals summed per UTC hour and reporting key, in the close's transaction
(at its end).

Why per hour, not per day: a report's window is exact to the second, so its
ragged ends (a window that starts at 09:17, or "this month so far" that
ends now) are computed interval by interval; with hour buckets those ends
are at most an hour of intervals each, with day buckets up to a day. An
hour bucket is still small: a month is 720 buckets per key, and a 90-minute
interval touches two or three.

What a row holds (``UsageRollup``): resource-seconds (whole GPUs, blocks,
MIG instances, GPU-equivalents, GPU memory beside blocks, CPUs, RAM) and the
cost, each piece priced by the lists in force for that piece (``PriceBook``
splits where a list changes), keyed by hour, project, owner token, workload
class, labels (canonical JSON) and GPU model. Sums of sums: any set of whole
hours and keys adds up to what the intervals say.

Distinct jobs are not additive over buckets, so ``UsageJobDay`` keeps one
row per (day, job, GPU model) a closed interval touched, and ``UsageJobCount``
counts each job once per such day under the job's previous such day: the
jobs of a day are that day's counts summed, the distinct jobs of whole days
``[d0, d1)`` the counts of those days whose previous day is before d0 (a
job's first day in the window) - a sum over a few rows per day instead of a
DISTINCT over every job-day (``count_jobs``, in the close's transaction; a
close that adds a day before a job's other days re-links the later one).

A close appends its sums as rows of ``usage_rollup_deltas`` and
``usage_job_count_deltas`` (revision 0021), written as its transaction's last
statements (``add_closed``; a read of the rollups inside it writes them
first): plain inserts, so no exit waits for another's commit on a shared row.
:func:`fold`, on the admitter's timer, moves them into the summed tables with
upserts (``INSERT .. ON CONFLICT DO UPDATE``, keys sorted: two writers never
deadlock), and readers sum both in one statement (:func:`rollup_rows`,
:func:`job_count_rows`); rebuilds and backfills upsert directly. The job-count key ends in a shard, a
digest of the job id (:func:`shard`): without it every exit of a busy cluster
updated the same day's first-day job count (one project, owner, workload and
labels) and exits queued on that row lock until the commit (100 simulated
hosts: 10.6 % of the server's samples waited there). A job's rows all go to its
own shard, in the live path and in a rebuild alike, so a rebuild gives the same
rows; readers sum over shards. The rollup key has the column too but one shard
(``ROLLUP_SHARDS``): its row was the lesser wait (2.4 %), and every report and
``/metrics`` scrape sums its rows (16 shards took a 50,000-job scrape from 51 to
122 ms, 4 to 105 ms). ``add_closed`` is called by
``ledger.close_intervals`` only; ``backfill`` rebuilds from the ledger (the
0011 migration, and ``rebuild`` for tests and repairs).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any, Protocol, cast

from sqlalchemy import Subquery, Table, delete, event, func, inspect, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.util import find_tables

from queue_service.admission.units import held_equivalents
from queue_service.billing.pricebook import PriceBook
from queue_service.db.base import in_chunks
from queue_service.db.billing_models import (
    NO_PREVIOUS_DAY,
    UsageInterval,
    UsageJobCount,
    UsageJobCountDelta,
    UsageJobDay,
    UsageRollup,
    UsageRollupDelta,
)

__all__ = ["HOUR", "QUANTITIES", "Contributions", "add_closed", "backfill", "count_jobs", "day_floor", "fold",
           "hour_floor", "hour_pieces", "job_count_rows", "labels_hash", "labels_key", "piece", "rates", "rebuild",
           "rebuild_job_counts", "rollup_rows", "rollup_shard", "shard"]

HOUR = timedelta(hours=1)
QUANTITIES = ("gpu_seconds", "block_seconds", "mig_seconds", "gpu_equivalent_seconds", "gpu_memory_gib_seconds",
              "cpu_seconds", "ram_gib_seconds", "cost")
KEY = ("project_id", "hour", "owner_token_id", "workload", "labels_hash", "gpu_model", "shard")
JOB_DAY_KEY = ("project_id", "day", "job_id", "gpu_model")
JOB_COUNT_KEY = ("project_id", "day", "owner_token_id", "workload", "labels_hash", "prev_day", "shard")
SHARDS = 16  # rows per job-count key: 16 concurrent exits of distinct jobs collide on one row 1 time in 16 each
ROLLUP_SHARDS = 1  # rows per rollup key (see above: reads sum them; raise it if exits queue on that row)
CHUNK_ROWS = 5000  # rows per executemany


class IntervalLike(Protocol):
    """What the rollup reads of an interval (an ORM ``UsageInterval`` or a plain row of its columns)."""

    job_id: str
    project_id: str
    project_name: str
    owner_token_id: str | None
    workload: str
    labels_json: str
    kind: str
    gpu_model: str | None
    gpus: int
    blocks: int
    gpu_memory_mib: int
    mig_profile: str | None
    mig_compute_share: float
    cpus_milli: int
    memory_mib: int
    started_at: datetime
    ended_at: datetime | None


def labels_key(labels: Mapping[str, str] | None) -> str:
    """Labels as canonical JSON (sorted keys, no spaces): equal dicts give equal keys."""
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


def labels_hash(labels_json: str) -> str:
    """The rollup key for a labels set: a digest, so a long labels JSON never exceeds an index entry."""
    return hashlib.sha1(labels_json.encode(), usedforsecurity=False).hexdigest()


def shard(job_id: str) -> int:
    """The job's shard of its job-count keys (CRC-32: the same in every process and release)."""
    return zlib.crc32(job_id.encode()) % SHARDS


def rollup_shard(job_id: str) -> int:
    """The job's shard of its rollup keys: one of ``ROLLUP_SHARDS``, from the same digest."""
    return shard(job_id) % ROLLUP_SHARDS


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def day_floor(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def hour_pieces(a: datetime, b: datetime) -> list[tuple[datetime, datetime]]:
    """``[a, b)`` cut at whole UTC hours."""
    out = []
    while a < b:
        nxt = min(b, hour_floor(a) + HOUR)
        out.append((a, nxt))
        a = nxt
    return out


def rates(iv: IntervalLike) -> dict[str, float]:
    """What ``iv`` holds per second of each quantity but cost (the report's arithmetic, in seconds)."""
    out = dict.fromkeys(QUANTITIES, 0.0)
    if iv.kind == "gpu":
        out["gpu_seconds"] = iv.gpus
    elif iv.kind == "mig":
        out["mig_seconds"] = 1.0
    elif iv.kind == "blocks":
        out["block_seconds"] = iv.blocks
        out["gpu_memory_gib_seconds"] = iv.gpu_memory_mib / 1024
    out["gpu_equivalent_seconds"] = held_equivalents(
        iv.kind, blocks=iv.blocks, mig_profile=iv.mig_profile, gpu_model=iv.gpu_model)
    out["cpu_seconds"] = iv.cpus_milli / 1000
    out["ram_gib_seconds"] = iv.memory_mib / 1024
    return out


def piece(iv: IntervalLike, a: datetime, b: datetime, prices: PriceBook) -> dict[str, float]:
    """What ``iv`` held over ``[a, b)``, as resource-seconds and cost."""
    s = (b - a).total_seconds()
    out = {name: rate * s for name, rate in rates(iv).items()}
    out["cost"] = prices.cost(iv, a, b)  # type: ignore[arg-type]  # PriceBook reads the same attributes
    return out


class Contributions:
    """Rollup rows and job-day rows for a batch of closed intervals, summed by key before writing.

    ``sharded``: False only for a database before revision 0020 (the 0011 migration's backfill), whose
    rollup key has no shard.
    """

    def __init__(self, *, sharded: bool = True) -> None:
        self.sharded = sharded
        self.rollups: dict[tuple, dict[str, Any]] = {}
        self.job_days: dict[tuple, dict[str, Any]] = {}

    def add(self, iv: IntervalLike, prices: PriceBook) -> None:
        end = iv.ended_at
        if end is None or end <= iv.started_at:
            return  # open, or nothing held: a zero-length interval bills nothing
        owner = iv.owner_token_id or ""
        model = iv.gpu_model or ""
        digest = labels_hash(iv.labels_json)
        part = rollup_shard(iv.job_id) if self.sharded else 0  # unsharded: one row per key, as before 0020
        per_s = rates(iv)
        # One price for the whole interval unless a list changes inside it (then each piece is split).
        steady = not prices.changes(iv, iv.started_at, end)  # type: ignore[arg-type]
        hourly = prices.hourly(iv, iv.started_at) if steady else 0.0  # type: ignore[arg-type]
        for a, b in hour_pieces(iv.started_at, end):
            s = (b - a).total_seconds()
            key = (iv.project_id, hour_floor(a), owner, iv.workload, digest, model, part)
            row = self.rollups.get(key)
            if row is None:
                row = self.rollups[key] = {**dict(zip(KEY, key, strict=True)), "project_name": iv.project_name,
                                           "labels_json": iv.labels_json,
                                           **dict.fromkeys(QUANTITIES, 0.0), "max_gpu_memory_mib": 0,
                                           "intervals": 0}
            for name, rate in per_s.items():
                row[name] += rate * s
            row["cost"] += hourly * s / 3600 if steady else prices.cost(iv, a, b)  # type: ignore[arg-type]
            row["max_gpu_memory_mib"] = max(row["max_gpu_memory_mib"], iv.gpu_memory_mib)
            row["intervals"] += 1
            day = day_floor(a)
            day_key = (iv.project_id, day, iv.job_id, model)
            if day_key not in self.job_days:
                self.job_days[day_key] = {
                    "project_id": iv.project_id, "day": day, "job_id": iv.job_id, "gpu_model": model,
                    "owner_token_id": owner, "workload": iv.workload, "labels_json": iv.labels_json,
                }

    def write(self, bind: Session | Connection, *, appended: bool = False) -> None:
        """Into ``usage_rollups`` (upserts), or ``appended`` as rows of ``usage_rollup_deltas`` (an exit's
        live path: plain inserts, no row lock another exit waits for; ``fold`` adds them up later)."""
        rollups = [self.rollups[k] for k in sorted(self.rollups)]  # sorted: concurrent writers lock in one order
        if not self.sharded:
            rollups = [{k: v for k, v in row.items() if k != "shard"} for row in rollups]
        days = [self.job_days[k] for k in sorted(self.job_days)]
        if rollups and appended:
            _execute_chunks(bind, _insert(bind)(UsageRollupDelta.__table__), rollups)
        elif rollups:
            _upsert_rollups(bind, rollups, sharded=self.sharded)
        if days:
            days_table: Table = UsageJobDay.__table__  # type: ignore[assignment]
            _execute_chunks(bind, _insert(bind)(days_table).on_conflict_do_nothing(index_elements=list(JOB_DAY_KEY)),
                            days)


def _upsert_rollups(bind: Session | Connection, rows: list[dict[str, Any]], *, sharded: bool = True) -> None:
    """Add ``rows`` (sorted by key) to ``usage_rollups``."""
    key = [k for k in KEY if sharded or k != "shard"]
    table: Table = UsageRollup.__table__  # type: ignore[assignment]
    greatest = func.greatest if _dialect(bind) == "postgresql" else func.max
    stmt = _insert(bind)(table)
    stmt = stmt.on_conflict_do_update(index_elements=key, set_={
        **{name: table.c[name] + stmt.excluded[name] for name in (*QUANTITIES, "intervals")},
        "max_gpu_memory_mib": greatest(table.c.max_gpu_memory_mib, stmt.excluded.max_gpu_memory_mib),
        "project_name": stmt.excluded.project_name,
    })
    _execute_chunks(bind, stmt, rows)


def _sharded(bind: Session | Connection, table: str) -> bool:
    """Whether ``table`` has the shard column (revision 0020): the older migrations' backfills run before it."""
    return any(c["name"] == "shard" for c in _inspect(bind).get_columns(table))


def _inspect(bind: Session | Connection) -> Any:
    """The schema inspector of ``bind``'s connection (the one its transaction runs on)."""
    return inspect(bind.connection() if isinstance(bind, Session) else bind)


def _has_table(bind: Session | Connection, table: str) -> bool:
    """Whether ``table`` exists yet (the older migrations run this module's rebuilds before it does)."""
    return bool(_inspect(bind).has_table(table))


def _dialect(bind: Session | Connection) -> str:
    return bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name


def _insert(bind: Session | Connection) -> Callable[..., Any]:
    """The dialect's INSERT (both have ``on_conflict_do_update`` / ``_do_nothing``: the upserts here)."""
    return postgresql.insert if _dialect(bind) == "postgresql" else sqlite.insert


def _execute_chunks(bind: Session | Connection, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """``stmt`` over ``rows``, ``CHUNK_ROWS`` at a time (executemany: one compiled statement, cached)."""
    for chunk in in_chunks(rows, CHUNK_ROWS):
        bind.execute(stmt, chunk)


def _links(days: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """(day, the previous day) for each of a job's distinct days, ``NO_PREVIOUS_DAY`` before the first."""
    out, prev = [], NO_PREVIOUS_DAY
    for day in sorted(set(days)):
        out.append((day, prev))
        prev = day
    return out


JobInfo = tuple[str, str, str, str, str]  # a job's (project_id, job_id, owner_token_id, workload, labels_json)


def _write_counts(bind: Session | Connection, deltas: Mapping[tuple, int], info: Mapping[tuple, str],
                  *, sharded: bool = True, appended: bool = False) -> None:
    """Add ``deltas`` (JOB_COUNT_KEY -> jobs) to ``usage_job_counts``, keys sorted (one lock order), or
    ``appended`` as rows of ``usage_job_count_deltas`` (the live path, as ``Contributions.write``).

    ``sharded``: False before revision 0020 (the 0018 migration), where the key has no shard.
    """
    key = list(JOB_COUNT_KEY)
    if not sharded:  # fold the shards (the last key part): one row per unsharded key in a statement
        key.remove("shard")
        folded: Counter = Counter()
        for k, n in deltas.items():
            folded[k[:-1]] += n
        info = {k[:-1]: v for k, v in info.items()}
        deltas = folded
    rows = [{**dict(zip(key, k, strict=True)), "labels_json": info[k], "jobs": n}
            for k, n in sorted(deltas.items()) if n]
    if not rows:
        return
    if appended:
        _execute_chunks(bind, _insert(bind)(UsageJobCountDelta.__table__), rows)
        return
    table: Table = UsageJobCount.__table__  # type: ignore[assignment]
    stmt = _insert(bind)(table)
    stmt = stmt.on_conflict_do_update(index_elements=key, set_={"jobs": table.c.jobs + stmt.excluded.jobs})
    _execute_chunks(bind, stmt, rows)


def _add_links(deltas: Counter, labels: dict[tuple, str], job: JobInfo, links: Iterable[tuple[datetime, datetime]],
               sign: int) -> None:
    project_id, job_id, owner, workload, labels_json = job
    digest = labels_hash(labels_json)
    part = shard(job_id)
    for day, prev in links:
        key = (project_id, day, owner, workload, digest, prev, part)
        deltas[key] += sign
        labels[key] = labels_json


def count_jobs(session: Session, batch: Contributions) -> None:
    """Re-link the jobs of ``batch`` in ``usage_job_counts`` for the days it adds; before ``batch.write``.

    Reads each job's days already recorded, so it is O(the job's days), not O(the ledger). On PostgreSQL
    the jobs are locked (transaction advisory locks, in id order) so two closes of one job's replicas
    cannot both link a day under the same previous one.
    """
    # Keyed by (project, job): reports filter by project, so a job id is counted within its project.
    added: dict[tuple[str, str], set[datetime]] = defaultdict(set)
    info: dict[tuple[str, str], JobInfo] = {}
    for (project_id, day, job_id, _model), row in batch.job_days.items():
        added[project_id, job_id].add(day)
        info[project_id, job_id] = (project_id, job_id, row["owner_token_id"], row["workload"], row["labels_json"])
    if not added:
        return
    jobs = sorted({job_id for _, job_id in added})
    if _dialect(session) == "postgresql":
        for job_id in jobs:
            session.execute(select(func.pg_advisory_xact_lock(func.hashtext("usage_job:" + job_id))))
    known: dict[tuple[str, str], set[datetime]] = defaultdict(set)
    d = UsageJobDay
    for chunk in in_chunks(jobs):
        for project_id, job_id, day in session.execute(
            select(d.project_id, d.job_id, d.day).where(d.job_id.in_(chunk)).distinct()
        ):
            known[project_id, job_id].add(day)
    deltas: Counter = Counter()
    labels: dict[tuple, str] = {}
    for job in sorted(added):
        old = known.get(job, set())
        if added[job] <= old:
            continue
        _add_links(deltas, labels, info[job], _links(old), -1)
        _add_links(deltas, labels, info[job], _links(old | added[job]), +1)
    _write_counts(session, deltas, labels, appended=True)


def rebuild_job_counts(bind: Session | Connection) -> None:
    """Empty ``usage_job_counts`` and derive it from ``usage_job_days`` (``rebuild``, the 0018 and 0020 migrations)."""
    sharded = _sharded(bind, UsageJobCount.__tablename__)
    bind.execute(delete(UsageJobCount))
    if _has_table(bind, UsageJobCountDelta.__tablename__):  # revision 0021 on: what was appended goes too
        bind.execute(delete(UsageJobCountDelta))
    d = UsageJobDay
    deltas: Counter = Counter()
    labels: dict[tuple, str] = {}
    job_days = bind.execute(
        select(d.project_id, d.job_id, d.day, func.min(d.owner_token_id), func.min(d.workload),
               func.min(d.labels_json)).group_by(d.project_id, d.job_id, d.day)
        .order_by(d.project_id, d.job_id, d.day)
    )
    for _job, rows in groupby(job_days, key=lambda row: (row[0], row[1])):  # one job (within its project)
        days = list(rows)
        project_id, job_id, _day, owner, workload, labels_json = days[-1]
        _add_links(deltas, labels, (project_id, job_id, owner, workload, labels_json), _links(r[2] for r in days), +1)
    _write_counts(bind, deltas, labels, sharded=sharded)


_PENDING = "gpuq.rollups.pending"  # session.info: this transaction's closes, written just before its commit


class _Pending:
    """The rollup contributions of one transaction's closes, one price book for all of them."""

    def __init__(self, prices: PriceBook | None) -> None:
        self.batch = Contributions()
        self.prices = prices


def add_closed(session: Session, rows: Iterable[IntervalLike], prices: PriceBook | None = None) -> None:
    """Add just-closed intervals to the rollups, in the caller's transaction (``ledger.close_intervals``).

    Appended as deltas with the transaction's last statements (``_write_pending``, before its commit), one
    row per key for all of the transaction's closes; :func:`fold` adds them into the sums later. Inside a
    SAVEPOINT they are written at once, so a savepoint rolled back takes its contributions with it.
    """
    nested = session.in_nested_transaction()
    pending = _Pending(prices) if nested else session.info.setdefault(_PENDING, _Pending(prices))
    for iv in rows:
        pending.prices = pending.prices or PriceBook.load(session)
        pending.batch.add(iv, pending.prices)
    if nested:
        _write(session, pending.batch)


def _write(session: Session, batch: Contributions) -> None:
    if batch.rollups:
        count_jobs(session, batch)  # before the write: it reads the days the jobs held before this batch
        batch.write(session, appended=True)


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    """The transaction's closes into the rollups, as its last statements (see ``add_closed``)."""
    pending = session.info.pop(_PENDING, None)
    if pending is not None:
        _write(session, pending.batch)


_READ_BACK = frozenset(t.__tablename__ for t in (UsageRollup, UsageRollupDelta, UsageJobDay, UsageJobCount,
                                                  UsageJobCountDelta))


@event.listens_for(Session, "do_orm_execute")
def _before_reading_back(state: ORMExecuteState) -> None:
    """A transaction reads its own rollups as written: pending closes go in first (an autoflush for them)."""
    session = state.session
    if _PENDING not in session.info or not state.is_select:
        return
    tables = find_tables(cast(ClauseElement, state.statement), include_joins=True)
    if any(getattr(t, "name", None) in _READ_BACK for t in tables):
        _write_pending(session)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    if not session.in_nested_transaction():  # the transaction is gone, and what it closed with it
        session.info.pop(_PENDING, None)


def backfill(bind: Session | Connection, select_page: Callable[[int, int], list[Any]], prices: PriceBook,
             *, page: int = 20_000) -> int:
    """Roll up every closed interval (a fresh table: the 0011 migration, ``rebuild``); returns how many were read.

    ``select_page(after_id, limit)`` answers the next closed intervals by id (rows with an ``id``), so no
    server-side cursor stays open while the rollups are written on the same connection.
    """
    n, after = 0, 0
    sharded = _sharded(bind, UsageRollup.__tablename__)
    while True:
        rows = select_page(after, page)
        if not rows:
            return n
        batch = Contributions(sharded=sharded)
        for iv in rows:
            batch.add(iv, prices)
        batch.write(bind)
        n += len(rows)
        after = rows[-1].id


def rollup_rows() -> Subquery:
    """``usage_rollups`` and the deltas not folded yet, as one selectable (``.c``: the rollup columns).

    Every reader sums rows per key already (shards, hours), so a key's deltas are more rows to sum; in
    one statement, a fold that commits meanwhile is seen whole or not at all, never twice."""
    return _with_deltas(UsageRollup.__table__, UsageRollupDelta.__table__, "rollup_rows")


def job_count_rows() -> Subquery:
    """``usage_job_counts`` and its deltas not folded yet, as one selectable (as :func:`rollup_rows`)."""
    return _with_deltas(UsageJobCount.__table__, UsageJobCountDelta.__table__, "job_count_rows")


def _with_deltas(summed: Any, appended: Any, name: str) -> Subquery:
    """``summed``'s rows and ``appended``'s (the same columns), but their ids, as one subquery."""
    names = [c.name for c in summed.columns if c.name != "id"]
    return union_all(select(*(summed.c[n] for n in names)), select(*(appended.c[n] for n in names))).subquery(name)


def fold(session: Session) -> int:
    """Move the appended deltas into ``usage_rollups`` and ``usage_job_counts``; returns the deltas moved.

    ``DELETE .. RETURNING`` takes exactly the deltas committed when it runs (one inserted meanwhile stays
    for the next fold), and they are added in the same transaction: a reader sees them in the deltas or
    in the sums, never both (``rollup_rows``). Two folds at once take disjoint rows. Called by the
    admitter's loop on its timer (``admitter.loop``); nothing is lost if it never runs, only summed later.
    """
    delta: Table = UsageRollupDelta.__table__  # type: ignore[assignment]
    moved = 0
    rollups: dict[tuple, dict[str, Any]] = {}
    for row in session.execute(delete(delta).returning(*delta.c)).mappings():
        moved += 1
        key = tuple(row[k] for k in KEY)
        into = rollups.get(key)
        if into is None:
            rollups[key] = {k: v for k, v in row.items() if k != "id"}
            continue
        for name in (*QUANTITIES, "intervals"):
            into[name] += row[name]
        into["max_gpu_memory_mib"] = max(into["max_gpu_memory_mib"], row["max_gpu_memory_mib"])
    if rollups:
        _upsert_rollups(session, [rollups[k] for k in sorted(rollups)])
    counts_delta: Table = UsageJobCountDelta.__table__  # type: ignore[assignment]
    counts: Counter = Counter()
    labels: dict[tuple, str] = {}
    for row in session.execute(delete(counts_delta).returning(*counts_delta.c)).mappings():
        moved += 1
        key = tuple(row[k] for k in JOB_COUNT_KEY)
        counts[key] += row["jobs"]
        labels[key] = row["labels_json"]
    _write_counts(session, counts, labels)
    return moved


def rebuild(session: Session) -> int:
    """Empty the rollups and sum the whole ledger again (repairs, tests); returns the intervals read."""
    session.execute(delete(UsageRollup))
    session.execute(delete(UsageRollupDelta))
    session.execute(delete(UsageJobDay))

    columns = [getattr(UsageInterval, c) for c in (
        "id", *IntervalLike.__annotations__)]  # plain rows: ORM objects cost more than the arithmetic

    def page(after: int, limit: int) -> list[Any]:
        return list(session.execute(select(*columns).where(UsageInterval.ended_at.is_not(None),
                                                           UsageInterval.id > after)
                                    .order_by(UsageInterval.id).limit(limit)))

    n = backfill(session, page, PriceBook.load(session))
    rebuild_job_counts(session)
    return n

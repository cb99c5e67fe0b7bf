"""The admitter's loop: one cycle at a time, on a wake or a timer, in its own thread.

Steps of ``run_once`` (each cycle, under the admission lock):

1. expire node leases;
2. snapshot: schedulable nodes with free capacity, and the queued jobs (``read``)
   that their dependencies and array limits let in (``lifecycle.gates``), whose
   approval has not lapsed (``lifecycle.approval``) and whose project's hard
   budget is not spent this month (``billing.budget``);
3. decide (``admission.cycle.run_cycle``, pure);
4. persist in one transaction (``persist``: the lifecycle admits and preempts);
5. commit (the ``transaction`` block ends): the launches and stops go out after it (``lifecycle.effects``);
   a lost one is re-sent by ``reconcile``.

Only one admitter runs at a time: a PostgreSQL advisory lock held for the
cycle's transaction (a second replica's cycle skips), SQLite's single writer.
With several API processes one of them leads (``leader``): only its admitter
cycles, and the others' wakes reach it as a ``NOTIFY``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from queue_service.admission.cycle import PackerFactory, Repartitioner, run_cycle
from queue_service.admitter import deadlines, read
from queue_service.admitter.hardware import hardware_aware
from queue_service.admitter.leader import Leadership
from queue_service.admitter.persist import persist
from queue_service.admitter.reconcile import reconcile
from queue_service.billing import budget, rollups
from queue_service.db import locks
from queue_service.db.priority_classes import effective
from queue_service.db.session import transaction
from queue_service.lifecycle import approval, gates
from queue_service.services import nodes as node_service
from queue_service.settings import Settings

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = locks.ADMISSION_CYCLE  # the cycle's transaction lock; the reconciler's is locks.RECONCILE
# Another replica's cycle held the lock: it may have read the queue before this replica's commit, so try
# again almost at once (a job queued here must not wait for the timer).
SKIPPED_RETRY_S = 0.05


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did."""

    admitted: int
    waiting: int
    duration_s: float
    skipped: bool = False
    idle_wait_s: float | None = None  # nothing live: the next cycle may wait this long for a wake (``deadlines``)


class Admitter:
    """Runs admission cycles on demand (``wake``) and on a timer, in its own thread."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        packer_factory: PackerFactory,
        repartition: Repartitioner | None = None,
        may_lead: bool = True,
    ) -> None:
        self.sessions = sessions
        self.repartition = repartition
        self.settings = settings
        self.packer_factory = packer_factory
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.last_report: CycleReport | None = None
        self.is_postgres = sessions.kw["bind"].dialect.name == "postgresql"
        # several processes: one leads and cycles, the others relay their wakes to it; one that may not lead
        # (an API process beside the admitter's own process) only relays, and runs no loop at all
        self.may_lead = may_lead
        self.leadership = Leadership(_libpq_dsn(sessions), on_wake=self._wake.set, may_lead=may_lead) if (
            self.is_postgres and settings.api_processes > 1) else None

    # -- the loop -------------------------------------------------------
    def wake(self) -> None:
        """Ask for a cycle as soon as possible (coalesced: many wakes, one cycle); on a process that does not
        lead, the leader's."""
        if self.leadership is not None and not self.leadership.is_leader:
            self.leadership.relay()
        else:
            self._wake.set()

    @property
    def leads(self) -> bool:
        """Whether this process's admitter runs cycles (the only one, or the elected leader)."""
        return self.leadership is None or self.leadership.is_leader

    def start(self) -> None:
        if self.leadership is not None:
            self.leadership.start()
        if not self.may_lead and self.leadership is not None:
            return  # wakes are relayed; cycles and reconciliation are the admitter process's
        self._thread = threading.Thread(target=self._loop, name="gpuq-admitter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.leadership is not None:
            self.leadership.stop()

    def _loop(self) -> None:
        """Cycles on a wake (a commit that queued, freed or changed something) and on the timer, for recovery.

        Reconciliation (lease expiry, re-sends) and the usage fold run on the timer and at most
        once per ``admission_interval_s`` otherwise, not on every wake. Between
        two cycles the loop leaves the database to the others for as long as
        the last one took (at least ``admission_min_gap_s``): a storm of
        submits, each a wake, gets cycles that take many of them at once
        instead of back-to-back cycles that hold SQLite's one writer.

        The timer is ``admission_interval_s`` while any job is queued or live;
        with none, the cycle says how long nothing can happen without a wake
        (the first node lease to run out, at most ``deadlines.IDLE_TICK_S``):
        an idle server sleeps instead of cycling every interval.
        """
        last_reconcile = -float("inf")
        due = time.monotonic() + self.settings.admission_interval_s
        while not self._stop.is_set():
            woken = self._wake.wait(timeout=max(0.0, due - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            started = time.monotonic()
            if not woken or started - last_reconcile >= self.settings.admission_interval_s:
                last_reconcile = started
                try:
                    # Recovery first, so a job requeued from a dead node is admitted in this very cycle.
                    self.reconcile()
                except Exception:
                    log.exception("reconcile failed; retrying on the next wake")
                try:
                    self.fold_usage()
                except Exception:
                    log.exception("folding the exits' usage into the rollups failed; retrying on the next tick")
            wait_s = self.settings.admission_interval_s
            try:
                report = self.run_once()
                if report.idle_wait_s is not None:
                    wait_s = report.idle_wait_s
                if report.skipped and self.leads:
                    wait_s = SKIPPED_RETRY_S
            except Exception:
                log.exception("admission cycle failed; retrying on the next wake")
                time.sleep(0.2)
            gap_s = max(self.settings.admission_min_gap_s, time.monotonic() - started)
            due = time.monotonic() + wait_s
            self._stop.wait(min(gap_s, 1.0, wait_s))

    def _locked(self, session: Session, key: int) -> bool:
        """Take the transaction's advisory lock on PostgreSQL; False if another replica holds it."""
        if not self.is_postgres:
            return True
        return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}))

    # -- one cycle --------------------------------------------------------
    def run_once(self) -> CycleReport:
        """One cycle, under the admission lock."""
        started = time.perf_counter()
        if not self.leads:
            return CycleReport(0, 0, time.perf_counter() - started, skipped=True)  # the leader decides
        # The transaction commits when the block ends (5.); the lifecycle's effects (launches, stops) go
        # out after that commit, and a failed cycle rolls back whole.
        with self._lock, transaction(self.sessions) as session:
            if not self._locked(session, ADVISORY_LOCK_KEY):
                return CycleReport(0, 0, time.perf_counter() - started, skipped=True)
            # 1. leases
            node_service.expire_leases(session)
            # 2. snapshot: the queued jobs, minus those their dependencies or array limit hold back
            rows = read.queued(session)
            queued = {job.id: job for job in rows}
            gated = read.entities(session, (job.id for job in rows if job.gated))
            held = gates.hold_back(session, queued=gated)
            held.update(approval.expire(session, queued=gated))  # lapsed: pending_approval again
            held.update(budget.hold_back(session, queued={k: j for k, j in queued.items() if k not in held}))
            snapshot = read.snapshot(session, settings=self.settings, rows=rows, skip=held)
            # 3. decide
            result = run_cycle(snapshot, self.packer_factory, hardware_aware(session, self.repartition))
            # 4. persist
            launches = persist(session, result, queued, held=held,
                               classes=effective(session, settings=self.settings), settings=self.settings)
            # nothing was queued: nothing admitted either; with no job live the next cycle may wait for a wake
            idle_wait_s = None if rows else deadlines.idle_wait_s(session)
        self.cycles += 1
        if result.incomplete:
            self.wake()  # it stopped at its re-carving budget: continue at once
        # admitted: what was written (a job cancelled since the snapshot was decided, not admitted)
        admitted = len({launch.job_id for launch in launches})
        report = CycleReport(admitted, len(result.waiting), time.perf_counter() - started, idle_wait_s=idle_wait_s)
        self.last_report = report
        return report

    # -- usage ------------------------------------------------------------------
    def fold_usage(self) -> int:
        """The usage exits appended, folded into the rollups (``billing.rollups.fold``); returns rows moved."""
        with transaction(self.sessions) as session:
            return rollups.fold(session)

    # -- reconciliation -----------------------------------------------------
    def reconcile(self) -> int:
        """Recover lost nodes and re-send what is outstanding (``admitter.reconcile``); returns commands sent."""
        with transaction(self.sessions) as session:
            if not self._locked(session, locks.RECONCILE):
                return 0  # another replica reconciles right now
            _recovered, sent = reconcile(session, settings=self.settings)
            return sent


def _libpq_dsn(sessions: sessionmaker[Session]) -> str:
    """The service database's URL as libpq takes it (no SQLAlchemy driver suffix), for a connection of its own."""
    url = sessions.kw["bind"].url
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))

"""Group commit: many writing requests, one transaction, one flush.

Each ``POST /v1/jobs`` used to be its own transaction: on SQLite the 20
clients of a submit storm queued one by one for the single writer (each
holding it for its lookups, insert and commit), and the admitter's cycle
queued behind them. Here a request hands its unit of work to the committer
and waits; one thread takes every unit that is waiting and runs them in one
transaction, then commits and answers each caller. Its effects (the
admitter's wake, the log lines) go out once, after that commit, from the one
hook. A caller is answered only after the commit: a 201 means the job is stored.

A unit adds new rows and does not flush them (``autoflush`` is off while
units run): the batch's rows go in one flush, a multi-row INSERT per table,
instead of a SAVEPOINT, a flush and its RELEASE per unit (PostgreSQL submit
profile: 31 % of the committer's time). A unit returns its answer as a
function, called once that flush has given its rows their defaults.

A unit that raises is undone alone: its unflushed new rows are forgotten and
its effects put back (``lifecycle.effects.undone_on_error``); its caller gets
its error. What cannot be undone that way — a unit that flushed or changed a
row it loaded, a database error, a batch flush that fails — rolls the batch
back and runs each unit again alone, in its own transaction, so every caller
still gets its own answer and no job is stored twice.

Order: units run in the order they arrived. A unit must not wait on another
request (it runs on the committer's thread, which would wait for itself).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from queue_service.db.session import transaction
from queue_service.lifecycle import effects

log = logging.getLogger(__name__)

T = TypeVar("T")

Work = Callable[[Session], Callable[[], T]]  # adds rows, unflushed; returns its answer, called after the flush

MAX_BATCH = 64  # units per transaction: enough to take a storm's waiters at once, short enough to hold no lock long


@dataclass(frozen=True, slots=True)
class _Unit:
    work: Work[Any]
    future: Future[Any]


class _Entangled(Exception):
    """A unit changed what the batch cannot undo for it alone: every unit is run again on its own."""


class GroupCommitter:
    """One thread that runs waiting units of work in one transaction, flushes and commits them together."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = MAX_BATCH) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._units: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # transactions committed (or failed) so far
        self.units = 0  # units run so far

    def submit(self, work: Work[T]) -> Future[T]:
        """Queue ``work``; the future holds what it returned, or what it (or the commit) raised."""
        self._ensure_started()
        future: Future[T] = Future()
        self._units.put(_Unit(work, future))
        return future

    async def run(self, work: Work[T]) -> T:
        """``submit`` and wait for the answer without holding a thread."""
        return await asyncio.wrap_future(self.submit(work))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._units.put(None)
            thread.join(timeout=timeout_s)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="gpuq-group-commit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._units.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    unit = self._units.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    stopping = True
                    break
                batch.append(unit)
            self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, batch: list[_Unit]) -> None:
        """Every unit in one transaction and one flush, then each caller gets its own answer; if the batch
        cannot keep them apart, each unit alone."""
        units = [unit for unit in batch if unit.future.set_running_or_notify_cancel()]  # else its caller gave up
        try:
            answers = self._together(units)
        except _Entangled:
            answers = [self._alone(unit) for unit in units]
        except Exception as exc:  # noqa: BLE001 - the commit (or the BEGIN) failed: nothing was stored, all hear it
            log.warning("a group commit of %d units failed: %s", len(units), exc)
            answers = [(unit, None, exc) for unit in units]
        self.batches += 1
        self.units += len(batch)
        for unit, result, error in answers:
            if error is not None:
                unit.future.set_exception(error)
            else:
                unit.future.set_result(result)

    def _together(self, units: list[_Unit]) -> list[tuple[_Unit, Any, BaseException | None]]:
        flushes = 0

        def counted(*_: Any) -> None:
            nonlocal flushes
            flushes += 1

        answers: list[tuple[_Unit, Any, BaseException | None]] = []
        with transaction(self.sessions) as session:
            event.listen(session, "after_flush", counted)
            finishes: list[tuple[_Unit, Callable[[], Any]]] = []
            with session.no_autoflush:
                for unit in units:
                    new, dirty, deleted = set(session.new), set(session.dirty), len(session.deleted)
                    flushed = flushes
                    try:
                        with effects.undone_on_error(session):
                            finishes.append((unit, unit.work(session)))
                    except Exception as exc:  # any error is the unit's own, for its caller alone
                        if (isinstance(exc, SQLAlchemyError) or flushes != flushed or set(session.dirty) - dirty
                                or len(session.deleted) != deleted):
                            raise _Entangled from exc
                        for row in set(session.new) - new:
                            session.expunge(row)
                        answers.append((unit, None, exc))
            try:
                session.flush()
            except SQLAlchemyError as exc:  # one unit's row was refused: which one, only each alone can say
                raise _Entangled from exc
            answers += [(unit, finish(), None) for unit, finish in finishes]
        order = {id(unit): i for i, unit in enumerate(units)}
        return sorted(answers, key=lambda answer: order[id(answer[0])])

    def _alone(self, unit: _Unit) -> tuple[_Unit, Any, BaseException | None]:
        try:
            with transaction(self.sessions) as session:
                finish = unit.work(session)
                session.flush()
                return unit, finish(), None
        except Exception as exc:  # noqa: BLE001 - its own error, or its commit's
            return unit, None, exc

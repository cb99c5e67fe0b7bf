"""Group commit: many writing requests, one transaction.

Each ``POST /v1/jobs`` used to be its own transaction: on SQLite the 20
clients of a submit storm queued one by one for the single writer (each
holding it for its lookups, insert and commit), and the admitter's cycle
queued behind them. Here a request hands its unit of work to the committer
and waits; one thread takes every unit that is waiting, runs each in its
own savepoint (``lifecycle.effects.savepoint``: a unit that raises is undone
alone and its caller gets its error), commits them all at once and answers
each caller. Its effects (the admitter's wake, the log lines) go out once,
after that commit, from the one hook. A caller is answered only after the
commit: a 201 means the job is stored.

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

from sqlalchemy.orm import Session, sessionmaker

from queue_service.db.session import transaction
from queue_service.lifecycle import effects

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 64  # units per transaction: enough to take a storm's waiters at once, short enough to hold no lock long


@dataclass(frozen=True, slots=True)
class _Unit:
    work: Callable[[Session], Any]
    future: Future[Any]


class GroupCommitter:
    """One thread that runs waiting units of work, each in a savepoint, and commits them together."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = MAX_BATCH) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._units: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # transactions committed (or failed) so far
        self.units = 0  # units run so far

    def submit(self, work: Callable[[Session], T]) -> Future[T]:
        """Queue ``work``; the future holds what it returned, or what it (or the commit) raised."""
        self._ensure_started()
        future: Future[T] = Future()
        self._units.put(_Unit(work, future))
        return future

    async def run(self, work: Callable[[Session], T]) -> T:
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
        """Every unit in its savepoint, one commit; then each caller gets its own answer."""
        answers: list[tuple[_Unit, Any, BaseException | None]] = []
        try:
            with transaction(self.sessions) as session:
                for unit in batch:
                    if not unit.future.set_running_or_notify_cancel():
                        continue  # its caller gave up before it ran
                    try:
                        with effects.savepoint(session):
                            result = unit.work(session)
                    except Exception as exc:  # noqa: BLE001 - any error is the unit's own, for its caller alone
                        answers.append((unit, None, exc))
                    else:
                        answers.append((unit, result, None))
        except Exception as exc:  # noqa: BLE001 - the commit (or the BEGIN) failed: nothing was stored, all hear it
            log.warning("a group commit of %d units failed: %s", len(batch), exc)
            answers = [(unit, None, exc) for unit in batch if not unit.future.cancelled()]
        self.batches += 1
        self.units += len(batch)
        for unit, result, error in answers:
            if error is not None:
                unit.future.set_exception(error)
            else:
                unit.future.set_result(result)

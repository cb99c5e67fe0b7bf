"""Engine and session factory; SQLite gets WAL, foreign keys, a busy timeout and one writer at a time.

SQLite allows one writer at a time. Left to itself, every transaction
would take the write lock at ``BEGIN IMMEDIATE`` and the others would poll
for it in SQLite's busy handler (sleeps of up to 100 ms: a queue of 20
requests took seconds, and a reader waited behind the admitter's cycle).
Here instead:

- **Writers** queue on one in-process lock (:class:`WriterLock`, FIFO)
  taken just before ``BEGIN IMMEDIATE`` and released when the connection
  goes back to the pool (after its commit or rollback). Another process
  (a migration, a second server by mistake) is still waited for by the
  busy timeout.
- **Readers** (:func:`reading`, and the API's GET routes) run a plain
  deferred ``BEGIN``: under WAL they read a snapshot and never wait for
  a writer, the admitter's cycle included.

PostgreSQL needs none of this: the options are ignored there.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

READ_ONLY = "gpuq_read_only"  # execution option: a deferred, lock-free SQLite transaction
BUSY_TIMEOUT_S = 30.0  # another process holding SQLite's write lock; and the longest wait for ours
_HOLDS = "gpuq_holds_writer_lock"  # connection-record info key: this connection holds the writer lock
REQUEST_THREADS = 40  # anyio's default thread limiter: FastAPI's sync routes and dependencies run on these
BACKGROUND_CONNECTIONS = 8  # the admitter, the reconciler, webhooks, metrics and other service threads
POSTGRES_POOL_SIZE = REQUEST_THREADS + BACKGROUND_CONNECTIONS
POSTGRES_POOL_OVERFLOW = 16  # a request whose dependency and route each hold a connection, briefly


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class WriterLock:
    """A first-come, first-served lock that any thread may release (a transaction may end on another thread).

    FastAPI runs a dependency's setup, the route and the teardown on
    different pool threads, so the thread that began a transaction is not
    always the one that commits it: an owner-checking lock cannot be used.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout_s: float) -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        if gate.acquire(timeout=timeout_s):
            return True  # handed over by release(): we hold it now
        with self._mutex:
            try:
                self._waiters.remove(gate)
                return False
            except ValueError:
                return True  # released to us between the timeout and here

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # straight to the next writer, in arrival order
            else:
                self._held = False

    @property
    def held(self) -> bool:
        return self._held


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Connections are cheap; writers wait on the writer lock holding one, so the pool must not run out
        # before the threads do (a pool timeout under load was a 500).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
                               pool_size=20, max_overflow=80, pool_timeout=BUSY_TIMEOUT_S)
        writer = WriterLock()

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        # Writers take the write lock at BEGIN (IMMEDIATE), after the in-process writer lock, so two writers
        # queue instead of failing late with "database is locked" on a read-then-write upgrade.
        @event.listens_for(engine, "begin")
        def _begin(conn):
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
                return
            if not conn.info.get(_HOLDS):
                started = time.monotonic()
                if not writer.acquire(BUSY_TIMEOUT_S):
                    raise OperationalError("BEGIN IMMEDIATE", None,
                                           Exception(f"writer lock not free after {time.monotonic() - started:.0f} s"))
                conn.info[_HOLDS] = True
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        def _release(record) -> None:
            if record is not None and record.info.pop(_HOLDS, False):
                writer.release()

        # Back in the pool (after commit or rollback), reset, or dropped: the next writer may begin.
        @event.listens_for(engine.pool, "checkin")
        def _checkin(dbapi_connection, connection_record):
            _release(connection_record)

        @event.listens_for(engine.pool, "reset")
        def _reset(dbapi_connection, connection_record, reset_state):
            _release(connection_record)

        @event.listens_for(engine.pool, "invalidate")
        def _invalidate(dbapi_connection, connection_record, exception):
            _release(connection_record)

        @event.listens_for(engine.pool, "close")
        def _close(dbapi_connection, connection_record):
            _release(connection_record)
        return engine
    # Every request thread must find a connection at once: a thread that waits for one (a pool of 10 + 20
    # under anyio's 40 threads) is a thread a committing transaction, holding row locks, cannot get.
    return create_engine(url, pool_pre_ping=True, pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_POOL_OVERFLOW,
                         pool_timeout=BUSY_TIMEOUT_S)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_session(factory: sessionmaker[Session]) -> Session:
    """A session for reading only: on SQLite a deferred transaction that never waits for a writer.

    Writing through it is a bug (on SQLite it may fail with "database is locked" under load).
    """
    bind = factory.kw["bind"]
    return factory(bind=bind.execution_options(**{READ_ONLY: True}))


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only unit of work (see :func:`read_session`); rolled back at the end."""
    session = read_session(factory)
    try:
        yield session
    finally:
        session.close()


@contextmanager
def transaction(factory: sessionmaker[Session], *, read_only: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error (``read_only``: see :func:`read_session`)."""
    session = read_session(factory) if read_only else factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def sync_held(session: Session, model: type, attribute: str, written: Iterable[tuple[Any, Any]]) -> None:
    """Give the ``model`` rows this session already holds what a bulk ``UPDATE .. RETURNING`` wrote to
    ``attribute`` ((primary key, value) pairs), as loaded values: the UPDATE bypassed the ORM, and this
    keeps the rows in step without a reload SELECT or a second write at the next flush."""
    for key, value in written:
        held = session.identity_map.get(identity_key(model, key))
        if held is not None:
            set_committed_value(held, attribute, value)

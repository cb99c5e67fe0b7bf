"""One admitter among several processes: an elected leader, woken by the others through the database.

With ``gpuq serve --api-processes N`` every process was a whole replica and
ran admission cycles on its own wakes, one at a time under the cycle's
advisory lock: at 1,000 hosts each process spent about a fifth of its time
in cycles, and a cycle that found the lock taken was tried again 50 ms later.
Now one process leads (Kueue's and Slurm's one scheduler): it holds a
*session* advisory lock on a connection of its own and ``LISTEN``\\s there.
Another process's wake (a commit that queued or freed something) becomes a
``NOTIFY`` on its own connection (coalesced: one per burst of wakes), which
wakes the leader's admitter. The others never run a cycle.

The leader's connection is the lease: when its process dies or the
connection breaks, PostgreSQL drops the lock, and another process, trying
every ``retry_s``, takes the lead and runs a cycle at once (a wake sent
while nobody led is covered by that cycle: it reads everything from the
database). The cycle's transaction lock stays, so a leader that lost its
connection mid-cycle and its successor never decide at the same time.

Who may lead (``may_lead``): ``gpuq serve --api-processes N`` runs its
admitter in a process of its own that serves no requests
(``replicas.serve_admitter``), and the API processes only relay. A leader
that also served requests took the GIL back after every database round
trip behind its request threads: at 300 simulated hosts its cycles took
2-4 s, of which 0.3 s was its own work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import psycopg

from queue_service.db import locks

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = locks.LEADER  # the cycle's and the reconciler's transaction locks are others (``db.locks``)
CHANNEL = "gpuq_admit"
RETRY_S = 1.0  # how often a process that does not lead tries to, and how soon a lost connection is replaced


class Leadership:
    """This process's part in the election: leads (and hears the others' wakes) or relays its own wakes."""

    def __init__(self, dsn: str, *, on_wake: Callable[[], None], retry_s: float = RETRY_S,
                 key: int = LEADER_LOCK_KEY, may_lead: bool = True) -> None:
        self.dsn = dsn
        self.on_wake = on_wake  # called on the leader for every wake heard, and once when it takes the lead
        self.retry_s = retry_s
        self.key = key
        # False: only relay (an API process beside a process that does nothing but admit: ``replicas``)
        self.may_lead = may_lead
        self.is_leader = False
        self.terms = 0  # how many times this process took the lead
        self._relay = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Leadership:
        self._thread = threading.Thread(target=self._run, name="gpuq-leadership", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._relay.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.retry_s))
        self.is_leader = False

    @property
    def application_name(self) -> str:
        """This connection's name in ``pg_stat_activity``: who may lead, and which process (the leader is the
        one whose backend holds the lock in ``pg_locks``)."""
        return f"gpuq-{'admitter' if self.may_lead else 'relay'}-{os.getpid()}"

    def relay(self) -> None:
        """A wake of this process, for the leader (sent as one ``NOTIFY`` however many come at once)."""
        self._relay.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            led = False
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10,
                                     application_name=self.application_name) as conn:
                    try:
                        self._serve(conn)
                    finally:  # never a thread that ended believing it leads: before its connection, and lock, go
                        led, self.is_leader = self.is_leader, False
            except psycopg.Error as exc:
                if led:
                    log.warning("the admitter's leadership connection broke (%s); another process may lead", exc)
            except Exception:
                log.exception("the admitter's leadership failed; trying again")
            self._stop.wait(self.retry_s)

    def _serve(self, conn: psycopg.Connection) -> None:
        next_try = 0.0
        while not self._stop.is_set():
            if self.is_leader:
                for _notify in conn.notifies(timeout=self.retry_s):
                    self.on_wake()
                conn.execute("SELECT 1")  # a connection that broke while nothing was heard says so here
                continue
            if self.may_lead and time.monotonic() >= next_try:
                next_try = time.monotonic() + self.retry_s
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                if row is not None and row[0]:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.is_leader = True
                    self.terms += 1
                    log.info("this process leads admission now")
                    self.on_wake()  # wakes sent while nobody led: one cycle reads them all from the database
                    continue
            wait_s = max(0.0, next_try - time.monotonic()) if self.may_lead else self.retry_s
            if self._relay.wait(wait_s) and not self._stop.is_set():
                self._relay.clear()
                conn.execute(f"NOTIFY {CHANNEL}")

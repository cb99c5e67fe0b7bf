"""Several API processes on one port (``gpuq serve --api-processes N``, PostgreSQL and Redis only).

One Python process serves requests on one core (the GIL): on a busy server
the request path, not the database, was the limit (submit storms, a thousand
agents' heartbeats). With N processes the kernel spreads connections over N
listening sockets bound with ``SO_REUSEPORT``. Each API process serves the
API and sends webhooks; one more process does nothing but admit and
reconcile (:func:`serve_admitter`). What keeps them one service is in the
database, as for replicas on several hosts:

* the admitter process leads (``admitter.leader``: a session advisory lock
  on a connection of its own); the API processes' wakes reach it as a
  ``NOTIFY``. In its own process a cycle no longer waits for the GIL behind
  request threads after every database round trip (300 simulated hosts: a
  leader that also served requests took 2-4 s a cycle). When it dies the
  supervisor starts it again, and the new one takes the lead once the old
  one's connection is gone; a cycle still holds its transaction's advisory
  lock (``admitter.loop``), so an old leader and a new one never decide at once;
* reconciliation takes its own advisory lock; webhook deliveries are leased;
* the never-fits check confirms a refusal on a fresh read
  (``admitter.feasibility``): a node may have registered through another
  process;
* the first process migrates, writes the tokens and runs the local agent;
  the others, and the admitter process, start after it serves
  (``Replicas``), and one that dies is started again.

Per process, and so not shared: the never-fits cache (above), the token cache
(``GPUQ_AUTH_CACHE_S``, a second), the fleet size heartbeats are timed by, and
the vanished-job rule's memory of which heartbeats left a running job out
(``services.agents``): an agent keeps one kept-alive connection, so its
heartbeats reach one process; one that hops loses that job a few heartbeats
later, never sooner.

SQLite has one writer and the in-process broker one process: both are refused.
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from queue_service.settings import Settings

log = logging.getLogger("gpuq")

RESTART_BACKOFF_S = 2.0  # a replica that died is started again after at least this long


def refusal(settings: Settings) -> str | None:
    """Why ``settings`` cannot run several API processes, or None."""
    if settings.api_processes <= 1:
        return None
    if settings.is_sqlite:
        return "--api-processes > 1 needs PostgreSQL (--database-url postgresql://...): SQLite has one writer"
    if not settings.broker_url.startswith("redis://"):
        return "--api-processes > 1 needs a shared broker (--broker-url redis://host:6379/0)"
    if settings.port == 0:
        return "--api-processes > 1 needs a fixed --port (every process listens on it)"
    return None


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``: every process binds its own, and the kernel
    spreads new connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_admitter(settings: Settings) -> None:
    """The admitter process's body: admission cycles, reconciliation and webhook deliveries, no requests,
    until SIGTERM (its commits' launches and stops go out through the broker as anywhere else)."""
    from queue_service.context import ServiceContext
    from queue_service.embedded import configure_logging, wait_for_signal, warm_partitioner

    configure_logging()
    ctx = ServiceContext.build(settings, admits=True)
    warm_partitioner()
    ctx.start_background()
    try:
        wait_for_signal()
    finally:
        ctx.stop_background()
        ctx.engine.dispose()


def serve_replica(settings: Settings) -> None:
    """A replica process's body: the service without the first process's one-time work, until SIGTERM."""
    from queue_service.embedded import EmbeddedServer, configure_logging, wait_for_signal

    configure_logging()
    embedded = EmbeddedServer(settings, replica=True).start()
    try:
        wait_for_signal()
    finally:
        embedded.stop()


@dataclass
class Replicas:
    """The N − 1 replica processes beside the first, and the admitter process (the last): started, kept
    running, stopped."""

    settings: Settings
    processes: list[BaseProcess | None] = field(default_factory=list)
    _started_at: list[float] = field(default_factory=list)

    def start(self) -> Replicas:
        count = self.settings.api_processes  # N - 1 API replicas and the admitter
        self.processes, self._started_at = [None] * count, [0.0] * count
        for i in range(count):
            self._start(i)
        return self

    def _start(self, i: int) -> None:
        admitter = i == len(self.processes) - 1
        # spawn, not fork: the first process already runs threads (HTTP, admitter, agent)
        process = multiprocessing.get_context("spawn").Process(
            target=serve_admitter if admitter else serve_replica, args=(self.settings,),
            name="gpuq-admitter" if admitter else f"gpuq-api-{i + 1}", daemon=False)
        process.start()
        self.processes[i], self._started_at[i] = process, time.monotonic()

    def check(self) -> None:
        """Start again any replica that exited (not more often than ``RESTART_BACKOFF_S``)."""
        for i, process in enumerate(self.processes):
            if process is None or process.is_alive():
                continue
            if time.monotonic() - self._started_at[i] < RESTART_BACKOFF_S:
                continue
            log.warning("process %s exited with %s; starting it again", process.name, process.exitcode)
            self._start(i)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to every replica (each finishes what it holds), then wait; kill what is still there."""
        live = [p for p in self.processes if p is not None and p.is_alive()]
        for process in live:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)

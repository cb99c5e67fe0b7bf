"""Watching one launched attempt until it ends: its time limit, stop requests, and an engine that goes away.

``watch`` returns how the attempt ended, as the service should hear it:

- a stop request (cancel, preemption, stale, self-fence) is reported with
  the reason it was asked with, whatever signal ended the container;
- the time limit (``spec.time_limit_s``, less the run time before a
  re-adoption) stops it with ``spec.grace_s`` and reports ``timed_out``;
- a runtime that stops answering (a Docker daemon restart) is waited out;
  a non-zero exit seen after that, or a SIGTERM/SIGKILL exit nobody asked
  for that is followed by the engine going away, is the infrastructure's
  (``lost``: requeued), not the job's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from workers.agent.runs import Run
from workers.runtime.base import ExitReason, ExitStatus, Runtime, RuntimeError_

log = logging.getLogger(__name__)

POLL_S = 0.25
SHIP_EVERY_S = 1.0  # how often a running attempt's logs are shipped
SIGNAL_EXITS = (137, 143)  # 128 + SIGKILL / SIGTERM
ENGINE_PROBE_S = 3.0  # how long an unexplained signal exit waits to see whether the engine goes away


def _launched(run: Run) -> tuple[Runtime, str]:
    if run.runtime is None or run.handle is None:
        raise RuntimeError_(f"{run.spec.job_id} was never launched")
    return run.runtime, run.handle


def wait_once(run: Run, timeout_s: float) -> ExitStatus | None:
    """The runtime's wait, riding out an engine that stops answering (e.g. a Docker daemon restart)."""
    runtime, handle = _launched(run)
    try:
        return runtime.wait(handle, timeout_s)
    except RuntimeError_ as exc:
        if not run.engine_lost:
            log.error("runtime lost sight of %s: %s; waiting for it to come back", run.spec.job_id, exc)
        run.engine_lost = True
        time.sleep(POLL_S)
        return None


def _engine_going_down(run: Run) -> None:
    """A container killed by SIGTERM/SIGKILL that nobody here asked to stop: was it the engine shutting down?

    A stopping Docker daemon stops its containers first and closes its API
    a moment later; if the engine stops answering within ``ENGINE_PROBE_S``
    the exit is the infrastructure's (``engine_lost``), not the job's.
    """
    if run.runtime is None or run.runtime.name != "docker":
        return
    deadline = time.monotonic() + ENGINE_PROBE_S
    while time.monotonic() < deadline and not run.engine_lost:
        wait_once(run, 0)
        time.sleep(0.1)


def _stop_and_wait(run: Run, grace_s: float) -> ExitStatus | None:
    runtime, handle = _launched(run)
    try:
        runtime.stop(handle, grace_s=grace_s)
    except RuntimeError_ as exc:
        log.error("could not stop %s: %s", run.spec.job_id, exc)
        return None
    return wait_once(run, 5.0)


def watch(run: Run, *, ship_logs: Callable[[Run], None], leave: threading.Event | None = None) -> ExitStatus | None:
    """Wait for ``run`` to end, enforcing its time limit and its stop request; ``ship_logs`` every second.

    None once ``leave`` is set: the agent is shutting down and leaves the
    attempt running under its shim (the next agent re-adopts it).
    """
    spec = run.spec
    limit = spec.time_limit_s
    deadline = time.monotonic() + max(0.0, limit - run.elapsed_s) if limit else None
    last_ship = time.monotonic()
    runtime, _handle = _launched(run)
    while True:
        if leave is not None and leave.is_set() and not run.stop_event.is_set():
            return None
        timeout = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
        status = wait_once(run, timeout)
        if status is not None:
            if run.stop_event.is_set() and status.reason in (ExitReason.EXITED, ExitReason.STOPPED):
                return ExitStatus(status.exit_code, run.stop_as, run.stop_reason or "stopped", run.stop_cause)
            if status.reason is ExitReason.EXITED and status.exit_code in SIGNAL_EXITS:
                _engine_going_down(run)
            if run.engine_lost and status.exit_code != 0 and status.reason in (
                    ExitReason.EXITED, ExitReason.STOPPED):
                return ExitStatus(status.exit_code, ExitReason.LOST,
                                  f"the {runtime.name} engine restarted under it (exit {status.exit_code})")
            return status
        if run.stop_event.is_set():
            status = _stop_and_wait(run, run.stop_grace_s)
            if status is None:
                continue  # the engine is away: try again
            return ExitStatus(status.exit_code, run.stop_as, run.stop_reason or "stopped", run.stop_cause)
        if deadline is not None and time.monotonic() >= deadline:
            status = _stop_and_wait(run, spec.grace_s)
            if status is None:
                continue
            return ExitStatus(status.exit_code, ExitReason.TIMED_OUT, f"time limit of {limit} s reached",
                              "time_limit")
        if time.monotonic() - last_ship >= SHIP_EVERY_S:
            ship_logs(run)
            last_ship = time.monotonic()

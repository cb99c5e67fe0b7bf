"""Exit reports: tell the service how an attempt ended, and keep telling it until it has heard.

An exit the service could not be told about is kept, with the attempt's
container (its exit state is the evidence), and re-sent after every
answered heartbeat until it is accepted or refused; only then is the
container removed. A refusal (the attempt is stale: the service ended or
moved it) is final and never re-sent.
"""

from __future__ import annotations

import logging
import threading

from workers.agent.cleanup import Cleanup
from workers.agent.logs import LogShipper
from workers.agent.runs import Run, RunBook, RunKey
from workers.client import Refused, ServiceClient, ServiceUnavailable
from workers.runtime.base import ExitStatus

log = logging.getLogger(__name__)


class ExitReports:
    """Sends exit reports; holds the unacknowledged ones for ``flush``."""

    def __init__(self, client: ServiceClient, book: RunBook, logs: LogShipper, cleanup: Cleanup) -> None:
        self.client = client
        self.book = book
        self.logs = logs
        self.cleanup = cleanup
        self._unreported: dict[RunKey, tuple[Run, ExitStatus]] = {}
        self._lock = threading.Lock()

    def _send(self, run: Run, status: ExitStatus) -> None:
        self.client.exited(run.spec, exit_code=status.exit_code, reason=status.reason, message=status.message,
                           stop_cause=status.cause, node_fault=status.node_fault)

    def report(self, run: Run, status: ExitStatus) -> bool:
        """Tell the service how the attempt ended; False if it could not be told (kept for ``flush``)."""
        try:
            self._send(run, status)
        except Refused as exc:
            log.info("exit report for %s refused: %s", run.spec.job_id, exc.detail)
        except ServiceUnavailable:
            log.error("could not report the exit of %s; will retry with the next heartbeat", run.spec.job_id)
            with self._lock:
                self._unreported[run.key] = (run, status)
            return False
        return True

    def flush(self) -> None:
        """Re-send the kept reports (logs first); stop at the first the service still cannot take."""
        with self._lock:
            pending = list(self._unreported.items())
        for key, (run, status) in pending:
            self.logs.ship(run, final=True)
            try:
                self._send(run, status)
            except ServiceUnavailable:
                return
            except Refused as exc:
                log.info("late exit report for %s refused: %s", key, exc.detail)
            with self._lock:
                self._unreported.pop(key, None)
            self.book.mark_ended(key)
            self.cleanup.run(run)

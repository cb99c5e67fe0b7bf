"""The node agent: composes the pieces (lease, supervision, logs, exit reports, MIG, adoption, sampling).

Actors call ``ensure_running`` / ``ensure_stopped``, which return at once and
are idempotent on ``(job_id, attempt, replica)`` (:mod:`workers.agent.runs`).
What each piece does is in its own module; this class only wires them:

- :mod:`~workers.agent.lease`: registration, heartbeats, self-fencing;
- :mod:`~workers.agent.adoption`: taking back attempts after a restart;
- :mod:`~workers.agent.supervisor` and :mod:`~workers.agent.watch`: one attempt
  from its claim to its exit;
- :mod:`~workers.agent.logs`, :mod:`~workers.agent.reports`,
  :mod:`~workers.agent.cleanup`: its logs, its exit report, its leftovers;
- :mod:`~workers.agent.mig`: carving MIG instances before a launch;
- :mod:`~workers.agent.mps`: the one MPS owner of both runtimes (status on
  each heartbeat, dead daemons restarted and their jobs failed, daemons
  stopped when a device leaves shared mode and at shutdown);
- :mod:`workers.sampler`: NVML samples of the running jobs (measured usage).

After each answered heartbeat the agent stops the attempts the service
calls stale, re-sends the exits the service has not heard, and retries the
removals that failed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from workers.agent.adoption import adopt
from workers.agent.cleanup import Cleanup
from workers.agent.lease import Lease
from workers.agent.logs import LogShipper
from workers.agent.mig import MigCarver
from workers.agent.mps import MpsKeeper
from workers.agent.reports import ExitReports
from workers.agent.runs import RunBook, RunKey
from workers.agent.supervisor import Supervisor
from workers.client import ServiceClient
from workers.gpu.mps import MpsDaemons
from workers.messages import LaunchSpec, NodeInventory, StopRequest
from workers.protocol import HeartbeatAnswer
from workers.runtime.base import ExitReason, Runtime
from workers.sampler import Sampler

log = logging.getLogger(__name__)

LOST_CONTACT = "lost contact with the service"
STALE = "stale attempt: the service ended it or placed it elsewhere"
STALE_GRACE_S = 10.0
SHUTDOWN = "agent shutting down"


class Agent:
    """One node's agent (see the module docstring for its pieces)."""

    def __init__(
        self,
        *,
        client: ServiceClient,
        runtimes: dict[str, Runtime],
        inventory: NodeInventory,
        work_dir: Path,
        heartbeat_s: float = 5.0,
        lease_s: float = 30.0,
        sample_interval_s: float = 30.0,
        mps: MpsDaemons | None = None,
    ) -> None:
        self.client = client
        self.runtimes = runtimes
        self.node_name = inventory.node_name
        self.work_dir = work_dir
        self.sample_interval_s = sample_interval_s
        self._stop = threading.Event()
        self._leaving = threading.Event()  # shutdown leaves the jobs running (their shims / containers)
        self._threads: list[threading.Thread] = []
        self.book = RunBook(work_dir)
        if mps is None:  # the runtimes' shared owner (make_runtimes gives both the same one)
            mps = next((m for m in (getattr(r, "mps", None) for r in runtimes.values()) if m is not None), None)
        self.mps = MpsKeeper(mps=mps, book=self.book, inventory=lambda: self.lease.inventory)
        self.lease = Lease(client=client, inventory=inventory, heartbeat_s=heartbeat_s, lease_s=lease_s,
                           running=self.book.keys, on_answer=self._after_heartbeat, on_fence=self._fence_runs,
                           mps_status=self.mps.status)
        if mps is not None:
            mps.on_change = self.lease.wake
        self.cleanup = Cleanup()
        self.logs = LogShipper(client)
        self.reports = ExitReports(client, self.book, self.logs, self.cleanup)
        self.mig = MigCarver(inventory=lambda: self.lease.inventory, report_gpus=self.lease.report_gpus)
        self.supervisor = Supervisor(client=client, node_name=self.node_name, runtimes=runtimes, book=self.book,
                                     carver=self.mig, logs=self.logs, reports=self.reports, cleanup=self.cleanup,
                                     stopping=self._stop, leaving=self._leaving, mps=self.mps)
        self.sampler = Sampler(node_name=self.node_name, holders=self.book.holders, client=client,
                               interval_s=sample_interval_s, stopping=self._stop)

    # -- the lease's figures, read and set through the agent (tests, the embedded server) --
    @property
    def inventory(self) -> NodeInventory:
        return self.lease.inventory

    @inventory.setter
    def inventory(self, inventory: NodeInventory) -> None:
        self.lease.inventory = inventory

    @property
    def heartbeat_s(self) -> float:
        return self.lease.heartbeat_s

    @property
    def lease_s(self) -> float:
        return self.lease.lease_s

    @property
    def fence_after_s(self) -> float:
        return self.lease.fence_after_s

    @property
    def fenced(self) -> bool:
        return self.lease.fenced

    @property
    def fences(self) -> int:
        return self.lease.fences

    # -- lifecycle ----------------------------------------------------------
    def start(self, *, register_timeout_s: float = 60.0) -> None:
        """Register (retrying while the service is unreachable), re-adopt, then heartbeat, fence and sample."""
        self.mps.preflight()
        self.lease.register(timeout_s=register_timeout_s)
        self.renew()  # in contact again: the shims found below must not fence while they are adopted
        adopt(client=self.client, node_name=self.node_name, runtimes=self.runtimes, book=self.book,
              supervise=self.supervisor.start)
        self.mps.after_adoption()
        self._threads += self.lease.start(self._stop)
        mps_thread = self.mps.start(self._stop)
        if mps_thread is not None:
            self._threads.append(mps_thread)
        if self.mps.status():
            self.lease.wake()  # the first heartbeat now: the service learns the MPS status before placing
        self._threads.append(self.sampler.start())  # NVML samples -> measured usage (billing)

    def shutdown(self, *, stop_jobs: bool = True, grace_s: float = 5.0) -> None:
        """Stop the agent; ``stop_jobs`` False leaves its attempts running for the next agent to re-adopt."""
        keep = set() if stop_jobs else self.mps.left_running()  # block jobs left running keep their daemons
        if not stop_jobs:
            self._leaving.set()
        self._stop.set()
        self.lease.wake()  # the heartbeat loop sees the stop now
        if stop_jobs:
            runs = self.book.runs()
            for run in runs:
                run.request_stop(SHUTDOWN, grace_s, cause="shutdown")
            for run in runs:
                run.done.wait(timeout=grace_s + 5)
        self.mps.shutdown(keep=keep)  # leave no daemon running but those

    def heartbeat_once(self) -> bool:
        """One heartbeat now (see ``Lease.heartbeat_once``); True if the service answered."""
        return self.lease.heartbeat_once()

    def fence(self) -> None:
        """Fence this node now: stop every job (see ``Lease.fence``)."""
        self.lease.fence()

    # -- commands (called by actors; return at once) ------------------------
    def ensure_running(self, spec: LaunchSpec) -> None:
        run = self.book.admit(spec)
        if run is not None:  # else a duplicate or late delivery: already running, done or stopped
            self.supervisor.start(run)

    def ensure_stopped(self, request: StopRequest) -> None:
        for run in self.book.matching(request.job_id, request.attempt, request.replica):
            run.request_stop(request.reason, request.grace_s)

    def running(self) -> list[RunKey]:
        return self.book.keys()

    # -- wiring ---------------------------------------------------------------
    def renew(self) -> None:
        """Renew the runtimes' local leases (process shims fence themselves without it)."""
        for runtime in self.runtimes.values():
            renew = getattr(runtime, "renew", None)
            if renew is not None:
                renew(self.fence_after_s)

    def _after_heartbeat(self, answer: HeartbeatAnswer) -> None:
        if not self.fenced:
            self.renew()
        for ref in answer.stale:
            self.ensure_stopped(StopRequest(ref.job_id, ref.attempt, self.node_name, STALE_GRACE_S, STALE,
                                            ref.replica))
        self.reports.flush()
        self.cleanup.retry()

    def _fence_runs(self, grace_cap_s: float) -> None:
        runs = self.book.runs()
        if runs:
            log.error("no answer from the service for %.1f s: stopping %d job(s)", self.fence_after_s, len(runs))
        for run in runs:
            run.request_stop(LOST_CONTACT, min(run.spec.grace_s, grace_cap_s), as_reason=ExitReason.LOST,
                             cause="fence")

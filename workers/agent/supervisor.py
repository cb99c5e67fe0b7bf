"""Supervision of one attempt: claim it, launch it, watch it, report how it ended, clean up.

Each run gets its own thread (``start``). The steps, and why:

1. **Claim** (``/v1/agent/started``): the service may refuse a stale or
   cancelled attempt (never started); if it cannot be reached the run is
   forgotten, so the service's re-sent launch is not ignored.
2. **Launch** through the runtime its spec asks for (an image: Docker,
   else a host process), after carving its MIG slices; an engine that is
   away (a daemon restart) is waited out for ``ENGINE_WAIT_S`` rather than
   burning the job's retries in a storm of instant failures.
3. **Watch** (:mod:`workers.agent.watch`): time limit, stop requests, logs.
4. **Report** (:mod:`workers.agent.reports`): the exit, once; an exit the
   service did not hear keeps the container until it does.

A failure that is this node's, not the job's (its log directory cannot be
written, a cgroup cannot be made, the engine stays away), is reported
``lost`` with ``node_fault``: the job is requeued and the service drains a
node that keeps failing launches.

A block job whose device's MPS daemon cannot start
(:class:`~workers.gpu.mps.MpsUnavailable`) is reported ``lost`` with the
reason, not ``start_failed``: the job is requeued and waits (the device's
``failed`` status reaches the service with the next heartbeat, so it is not
placed there again); it never runs without its limits.

Re-adopted runs skip 1 and 2. Any unexpected error is reported as ``lost``:
an attempt is never left unreported.
"""

from __future__ import annotations

import logging
import threading
import time

from workers.agent.cleanup import Cleanup
from workers.agent.logs import LogShipper
from workers.agent.mig import MigCarver
from workers.agent.mps import MpsKeeper
from workers.agent.reports import ExitReports
from workers.agent.runs import Run, RunBook
from workers.agent.watch import watch
from workers.client import Refused, ServiceClient, ServiceUnavailable
from workers.gpu.mps import MpsUnavailable
from workers.messages import LaunchSpec
from workers.runtime.base import ExitReason, ExitStatus, LaunchError, NodeFault, Runtime, RuntimeError_

log = logging.getLogger(__name__)

ENGINE_WAIT_S = 60.0  # how long a launch waits for an engine that does not answer
ENGINE_RETRY_S = 1.0


class Supervisor:
    """Runs attempts on this node's runtimes, one thread each."""

    def __init__(self, *, client: ServiceClient, node_name: str, runtimes: dict[str, Runtime], book: RunBook,
                 carver: MigCarver, logs: LogShipper, reports: ExitReports, cleanup: Cleanup,
                 stopping: threading.Event, leaving: threading.Event | None = None,
                 mps: MpsKeeper | None = None) -> None:
        self.client = client
        self.node_name = node_name
        self.runtimes = runtimes
        self.book = book
        self.carver = carver
        self.logs = logs
        self.reports = reports
        self.cleanup = cleanup
        self.stopping = stopping  # the agent is shutting down: stop waiting for an engine
        self.leaving = leaving  # the agent leaves its attempts running (shutdown without stopping jobs)
        self.mps = mps  # MPS daemons: a whole-device job stops its device's idle daemon first

    def start(self, run: Run) -> None:
        """Supervise ``run`` in its own thread."""
        threading.Thread(target=self.supervise, args=(run,), name=f"gpuq-run-{run.spec.job_id}", daemon=True).start()

    def supervise(self, run: Run) -> None:
        key = run.key
        keep = False  # keep the container: its exit is not acknowledged yet
        try:
            if not run.adopted:
                try:
                    self.client.claim(run.spec)
                except Refused as exc:
                    log.info("not starting %s: %s", key, exc.detail)
                    return
                except ServiceUnavailable as exc:
                    log.warning("could not claim %s (%s); waiting for the launch to be re-sent", key, exc)
                    self.book.forget(run)
                    return
                if run.stop_event.is_set():
                    keep = not self.reports.report(run, ExitStatus(None, run.stop_as, run.stop_reason or "stopped"))
                    return
                try:
                    self._open_logs(run)
                    run.runtime = self.runtime_for(run.spec)
                    if self.mps is not None:
                        self.mps.before_carve(run.spec)
                    run.spec = self.carver.carve(run.spec)
                    if self.mps is not None:
                        self.mps.before_launch(run.spec)
                    run.handle = self._launch(run, run.runtime)
                except MpsUnavailable as exc:  # the node's MPS, not the job: lost (requeued), it waits
                    log.error("no MPS for %s: %s", key, exc)
                    keep = not self.reports.report(run, ExitStatus(None, ExitReason.LOST, str(exc)))
                    return
                except NodeFault as exc:  # this node's fault: the attempt is lost (requeued), the node counted
                    log.error("node fault starting %s: %s", key, exc)
                    keep = not self.reports.report(run, ExitStatus(None, ExitReason.LOST, f"node failure: {exc}",
                                                                   node_fault=True))
                    return
                except LaunchError as exc:
                    keep = not self.reports.report(run, ExitStatus(None, ExitReason.START_FAILED, str(exc)))
                    return
            else:
                run.stdout_path.parent.mkdir(parents=True, exist_ok=True)
            status = watch(run, ship_logs=self.logs.ship, leave=self.leaving)
            if status is None:  # left running under its shim: no report, no cleanup; the next agent adopts it
                self.logs.ship(run)
                keep = True
                return
            self.logs.ship(run, final=True)
            keep = not self.reports.report(run, status)
        except Exception as exc:
            log.exception("supervising %s failed", key)
            keep = not self.reports.report(run, ExitStatus(None, ExitReason.LOST, f"agent error: {exc}"))
        finally:
            if not keep:
                self.cleanup.run(run)
            self.book.end(run)
            run.done.set()

    @staticmethod
    def _open_logs(run: Run) -> None:
        """Create the attempt's log files here first: a log directory this node cannot write is its fault."""
        try:
            run.stdout_path.parent.mkdir(parents=True, exist_ok=True)
            for path in (run.stdout_path, run.stderr_path):
                with open(path, "ab"):
                    pass
        except OSError as exc:
            raise NodeFault(f"cannot write the attempt's logs in {run.stdout_path.parent}: "
                            f"{exc.strerror or exc}") from exc

    def runtime_for(self, spec: LaunchSpec) -> Runtime:
        """Jobs with an image run in Docker, the others as host processes."""
        kind = "docker" if spec.image else "process"
        runtime = self.runtimes.get(kind)
        if runtime is None:
            have = ", ".join(sorted(self.runtimes)) or "none"
            raise LaunchError(f"node {self.node_name} has no {kind} runtime (it has: {have})")
        return runtime

    def _launch(self, run: Run, runtime: Runtime) -> str:
        """Launch, waiting out an engine that is away for up to ``ENGINE_WAIT_S``; a bad spec is never retried."""
        deadline = time.monotonic() + ENGINE_WAIT_S
        while True:
            try:
                return runtime.launch(run.spec, stdout_path=run.stdout_path, stderr_path=run.stderr_path)
            except LaunchError:
                raise
            except NodeFault:
                raise
            except RuntimeError_ as exc:
                if time.monotonic() > deadline or run.stop_event.is_set() or self.stopping.is_set():
                    raise NodeFault(f"the {runtime.name} engine does not answer: {exc}") from exc
                log.warning("cannot launch %s yet (%s); waiting for the engine", run.spec.job_id, exc)
                time.sleep(ENGINE_RETRY_S)

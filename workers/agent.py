"""The node agent: registers its host, heartbeats, and runs what its queue tells it to.

Actors call ``ensure_running`` / ``ensure_stopped``, which return at once and
are idempotent on ``(job_id, attempt, replica)``. Each attempt gets a
supervisor thread that claims it (the service may refuse a stale or
cancelled attempt), launches it through the runtime, ships its logs,
enforces its time limit, and reports its exit the moment it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.client import Refused, ServiceClient, ServiceUnavailable
from workers.messages import LaunchSpec, NodeInventory, StopRequest
from workers.runtime.base import ExitReason, ExitStatus, LaunchError, Runtime

log = logging.getLogger(__name__)

LOG_CHUNK_BYTES = 64 * 1024
POLL_S = 0.25


@dataclass
class _Run:
    spec: LaunchSpec
    stdout_path: Path
    stderr_path: Path
    handle: str | None = None
    runtime: Runtime | None = None
    stop_reason: str | None = None
    stop_grace_s: float = 10.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    shipped: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    done: threading.Event = field(default_factory=threading.Event)


Key = tuple[str, int, int]


class Agent:
    def __init__(
        self,
        *,
        client: ServiceClient,
        runtimes: dict[str, Runtime],
        inventory: NodeInventory,
        work_dir: Path,
        heartbeat_s: float = 5.0,
    ) -> None:
        self.client = client
        self.runtimes = runtimes
        self.inventory = inventory
        self.node_name = inventory.node_name
        self.work_dir = work_dir
        self.heartbeat_s = heartbeat_s
        self._runs: dict[Key, _Run] = {}
        self._ended: set[Key] = set()
        self._stopped: set[tuple[str, int]] = set()  # (job, attempt) stopped before it ran here
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        self.client.register(self.inventory)
        thread = threading.Thread(target=self._heartbeat_loop, name=f"gpuq-agent-hb-{self.node_name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def shutdown(self, *, stop_jobs: bool = True, grace_s: float = 5.0) -> None:
        self._stop.set()
        if stop_jobs:
            with self._lock:
                runs = list(self._runs.values())
            for run in runs:
                self._request_stop(run, "agent shutting down", grace_s)
            for run in runs:
                run.done.wait(timeout=grace_s + 5)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                answer = self.client.heartbeat(self.node_name)
                if not answer.get("known", True):
                    self.client.register(self.inventory)
            except (ServiceUnavailable, Refused) as exc:
                log.warning("heartbeat failed: %s", exc)

    # -- commands (called by actors; return at once) -----------------------
    def ensure_running(self, spec: LaunchSpec) -> None:
        key = (spec.job_id, spec.attempt, spec.replica)
        with self._lock:
            if key in self._runs or key in self._ended or key[:2] in self._stopped:
                return  # duplicate or late delivery: already running, done or stopped
            logs = self.work_dir / "logs" / spec.job_id
            run = _Run(spec, logs / f"{spec.attempt}.{spec.replica}.stdout", logs / f"{spec.attempt}.{spec.replica}.stderr")
            self._runs[key] = run
        thread = threading.Thread(target=self._supervise, args=(run,), name=f"gpuq-run-{spec.job_id}", daemon=True)
        thread.start()

    def ensure_stopped(self, request: StopRequest) -> None:
        with self._lock:
            runs = [
                r for (job, attempt, replica), r in self._runs.items()
                if job == request.job_id and attempt == request.attempt
                and (request.replica is None or replica == request.replica)
            ]
            if not runs:  # not started yet (or never here): remember, so a late launch is ignored
                if request.replica is None:
                    self._stopped.add((request.job_id, request.attempt))
                else:
                    self._ended.add((request.job_id, request.attempt, request.replica))
        for run in runs:
            self._request_stop(run, request.reason, request.grace_s)

    def _request_stop(self, run: _Run, reason: str, grace_s: float) -> None:
        run.stop_reason = reason
        run.stop_grace_s = grace_s
        run.stop_event.set()

    def running(self) -> list[Key]:
        with self._lock:
            return sorted(self._runs)

    # -- one attempt --------------------------------------------------------
    def _supervise(self, run: _Run) -> None:
        spec = run.spec
        key = (spec.job_id, spec.attempt, spec.replica)
        try:
            try:
                self.client.claim(spec)
            except Refused as exc:
                log.info("not starting %s: %s", key, exc.detail)
                return
            if run.stop_event.is_set():
                self._report(run, ExitStatus(None, ExitReason.STOPPED, run.stop_reason or "stopped"))
                return
            try:
                run.stdout_path.parent.mkdir(parents=True, exist_ok=True)
                run.runtime = self._runtime_for(spec)
                run.handle = run.runtime.launch(spec, stdout_path=run.stdout_path, stderr_path=run.stderr_path)
            except LaunchError as exc:
                self._report(run, ExitStatus(None, ExitReason.START_FAILED, str(exc)))
                return
            status = self._watch(run)
            self._ship_logs(run, final=True)
            self._report(run, status)
        except Exception as exc:  # noqa: BLE001 - never leave an attempt unreported
            log.exception("supervising %s failed", key)
            self._report(run, ExitStatus(None, ExitReason.LOST, f"agent error: {exc}"))
        finally:
            if run.handle is not None and run.runtime is not None:
                try:
                    run.runtime.cleanup(run.handle)
                except Exception:  # noqa: BLE001
                    log.exception("cleanup of %s failed", key)
            with self._lock:
                self._runs.pop(key, None)
                self._ended.add(key)
            run.done.set()

    def _runtime_for(self, spec: LaunchSpec) -> Runtime:
        """Jobs with an image run in Docker, the others as host processes."""
        kind = "docker" if spec.image else "process"
        runtime = self.runtimes.get(kind)
        if runtime is None:
            have = ", ".join(sorted(self.runtimes)) or "none"
            raise LaunchError(f"node {self.node_name} has no {kind} runtime (it has: {have})")
        return runtime

    def _watch(self, run: _Run) -> ExitStatus:
        spec = run.spec
        runtime = run.runtime
        deadline = time.monotonic() + spec.time_limit_s if spec.time_limit_s else None
        last_ship = time.monotonic()
        assert run.handle is not None
        while True:
            timeout = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            status = runtime.wait(run.handle, timeout)
            if status is not None:
                if run.stop_event.is_set() and status.reason is ExitReason.EXITED:
                    return ExitStatus(status.exit_code, ExitReason.STOPPED, run.stop_reason or "stopped")
                return status
            if run.stop_event.is_set():
                runtime.stop(run.handle, grace_s=run.stop_grace_s)
                status = runtime.wait(run.handle, 5.0)
                code = status.exit_code if status else None
                return ExitStatus(code, ExitReason.STOPPED, run.stop_reason or "stopped")
            if deadline is not None and time.monotonic() >= deadline:
                runtime.stop(run.handle, grace_s=spec.grace_s)
                status = runtime.wait(run.handle, 5.0)
                return ExitStatus(status.exit_code if status else None, ExitReason.TIMED_OUT,
                                  f"time limit of {spec.time_limit_s} s reached")
            if time.monotonic() - last_ship >= 1.0:
                self._ship_logs(run)
                last_ship = time.monotonic()

    def _ship_logs(self, run: _Run, *, final: bool = False) -> None:
        if run.handle is not None and run.runtime is not None:
            try:
                run.runtime.collect_logs(run.handle, stdout_path=run.stdout_path, stderr_path=run.stderr_path)
            except Exception:  # noqa: BLE001 - logs are best effort until the final flush
                log.exception("collecting logs failed")
        for stream, path in (("stdout", run.stdout_path), ("stderr", run.stderr_path)):
            try:
                with open(path, "rb") as fh:
                    fh.seek(run.shipped[stream])
                    while True:
                        data = fh.read(LOG_CHUNK_BYTES)
                        if not data:
                            break
                        self.client.logs(run.spec, stream=stream, offset=run.shipped[stream], data=data)
                        run.shipped[stream] += len(data)
            except FileNotFoundError:
                continue
            except (ServiceUnavailable, Refused) as exc:
                if final:
                    log.warning("could not ship %s of %s: %s", stream, run.spec.job_id, exc)

    def _report(self, run: _Run, status: ExitStatus) -> None:
        try:
            self.client.exited(run.spec, exit_code=status.exit_code, reason=status.reason.value,
                               message=status.message)
        except Refused as exc:
            log.info("exit report for %s refused: %s", run.spec.job_id, exc.detail)
        except ServiceUnavailable:
            log.error("could not report the exit of %s; the service will time the node out", run.spec.job_id)

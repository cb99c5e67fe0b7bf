"""The node agent: registers its host, heartbeats, re-adopts, and runs what its queue tells it to.

Actors call ``ensure_running`` / ``ensure_stopped``, which return at once and
are idempotent on ``(job_id, attempt, replica)``. Each attempt gets a
supervisor thread that claims it (the service may refuse a stale or
cancelled attempt), launches it through the runtime, ships its logs,
enforces its time limit, and reports its exit the moment it ends.

Liveness (the service's side is ``queue_service.recovery``):

- ``start`` registers, then **re-adopts**: every attempt the runtimes still
  hold (Docker: containers labelled with this node, running or exited) is
  offered to ``/v1/agent/adopt``; the service says which are current (they
  are supervised again: their exit is reported, their time limit kept) and
  which are stale (stopped and removed). The process runtime cannot re-adopt:
  its jobs die with the agent and the service requeues them.
- Heartbeats carry the attempts this agent runs; the answer names the
  ``stale`` ones (the service ended or moved them), which are stopped.
- **Self-fencing**: the lease is ``lease_s`` from the service's receipt of a
  heartbeat, so from the *sending* of the last answered heartbeat the agent
  has at least ``lease_s``. After ``fence_after_s`` (half the lease) without
  an answer it stops every job (reason "lost contact with the service",
  stop grace capped at a quarter of the lease), so they are gone before the
  service can requeue them elsewhere: one job never runs twice at once.
  Once the service answers again the agent re-registers.
- An exit the service could not be told about is kept (and the container
  with it) and re-sent with every heartbeat until it is accepted or refused.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from workers.client import Refused, ServiceClient, ServiceUnavailable
from workers.messages import LaunchSpec, NodeInventory, StopRequest
from workers.sampler import Sampler
from workers.runtime.base import ExitReason, ExitStatus, LaunchError, Runtime, RuntimeError_

log = logging.getLogger(__name__)

LOG_CHUNK_BYTES = 64 * 1024
POLL_S = 0.25
FENCE_FRACTION = 0.5  # of the lease: silence after which the agent stops its jobs
FENCE_GRACE_FRACTION = 0.25  # of the lease: the most a self-fencing stop waits before SIGKILL
LOST_CONTACT = "lost contact with the service"
SIGNAL_EXITS = (137, 143)  # 128 + SIGKILL / SIGTERM
ENGINE_WAIT_S = 60.0  # how long a launch waits for an engine that does not answer
ENGINE_PROBE_S = 3.0  # how long an unexplained signal exit waits to see whether the engine goes away


@dataclass
class _Run:
    spec: LaunchSpec
    stdout_path: Path
    stderr_path: Path
    handle: str | None = None
    runtime: Runtime | None = None
    stop_reason: str | None = None
    stop_as: ExitReason = ExitReason.STOPPED
    stop_grace_s: float = 10.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    shipped: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    done: threading.Event = field(default_factory=threading.Event)
    adopted: bool = False  # found in a runtime after an agent restart (already claimed, already launched)
    elapsed_s: float = 0.0  # run time before this agent took it over (time limit)
    engine_lost: bool = False  # the runtime stopped answering while the attempt ran


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
        lease_s: float = 30.0,
    ) -> None:
        self.client = client
        self.runtimes = runtimes
        self.inventory = inventory
        self.node_name = inventory.node_name
        self.work_dir = work_dir
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self._runs: dict[Key, _Run] = {}
        self._ended: set[Key] = set()
        self._stopped: set[tuple[str, int]] = set()  # (job, attempt) stopped before it ran here
        self._unreported: dict[Key, tuple[_Run, ExitStatus]] = {}  # exits the service has not acknowledged
        self._to_clean: dict[str, Runtime] = {}  # handles whose removal failed (engine away)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_contact = time.monotonic()
        self.fenced = False  # True from a self-fence until the service answers again
        self.fences = 0  # how many times this agent fenced itself (tests, logs)

    # -- lifecycle --------------------------------------------------------
    @property
    def fence_after_s(self) -> float:
        return self.lease_s * FENCE_FRACTION

    def start(self, *, register_timeout_s: float = 60.0) -> None:
        """Register (retrying while the service is unreachable), re-adopt, then heartbeat and watch the lease."""
        deadline = time.monotonic() + register_timeout_s
        while True:
            sent = time.monotonic()
            try:
                self._apply_timing(self.client.register(self.inventory))
                break
            except ServiceUnavailable:
                if time.monotonic() > deadline:
                    raise
                log.warning("service unreachable; retrying registration")
                time.sleep(1.0)
        self._last_contact = sent
        self._adopt()
        for target, name in ((self._heartbeat_loop, "hb"), (self._fence_loop, "fence")):
            thread = threading.Thread(target=target, name=f"gpuq-agent-{name}-{self.node_name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._threads.append(Sampler(self).start())  # NVML samples -> measured usage (billing)

    def shutdown(self, *, stop_jobs: bool = True, grace_s: float = 5.0) -> None:
        self._stop.set()
        if stop_jobs:
            with self._lock:
                runs = list(self._runs.values())
            for run in runs:
                self._request_stop(run, "agent shutting down", grace_s)
            for run in runs:
                run.done.wait(timeout=grace_s + 5)

    def _apply_timing(self, answer: dict) -> None:
        """The service sets the lease; heartbeat at least four times per lease."""
        self.lease_s = float(answer.get("lease_s") or self.lease_s)
        wanted = float(answer.get("heartbeat_s") or self.heartbeat_s)
        self.heartbeat_s = max(0.05, min(wanted, self.lease_s / 4))

    # -- heartbeats and self-fencing --------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.heartbeat_once()

    def heartbeat_once(self) -> bool:
        """One heartbeat; stops what the service calls stale, re-sends unreported exits. True if answered."""
        sent = time.monotonic()
        try:
            answer = self.client.heartbeat(self.node_name, running=self.running(),
                                           timeout_s=max(0.5, min(5.0, self.fence_after_s / 2)))
        except (ServiceUnavailable, Refused) as exc:
            log.warning("heartbeat failed: %s", exc)
            return False
        self._last_contact = sent
        self._apply_timing(answer)
        if not answer.get("known", True) or self.fenced:
            try:
                self._apply_timing(self.client.register(self.inventory))
                if self.fenced:
                    log.warning("contact with the service is back: registered again")
                self.fenced = False
            except (ServiceUnavailable, Refused) as exc:
                log.warning("re-registration failed: %s", exc)
        for ref in answer.get("stale") or []:
            self.ensure_stopped(StopRequest(ref["job_id"], int(ref["attempt"]), self.node_name, 10.0,
                                            "stale attempt: the service ended it or placed it elsewhere",
                                            int(ref.get("replica", 0))))
        self._flush_unreported()
        with self._lock:
            leftovers = list(self._to_clean.items())
        for handle, runtime in leftovers:
            if not self._clean(runtime, handle):
                break
        return True

    def _fence_loop(self) -> None:
        while not self._stop.wait(min(0.2, self.heartbeat_s)):
            if not self.fenced and time.monotonic() - self._last_contact > self.fence_after_s:
                self.fence()

    def fence(self) -> None:
        """No word from the service for too long: stop every job before its lease can run out."""
        self.fenced = True
        self.fences += 1
        with self._lock:
            runs = list(self._runs.values())
        if runs:
            log.error("no answer from the service for %.1f s: stopping %d job(s)", self.fence_after_s, len(runs))
        grace_cap = self.lease_s * FENCE_GRACE_FRACTION
        for run in runs:
            self._request_stop(run, LOST_CONTACT, min(run.spec.grace_s, grace_cap), as_reason=ExitReason.LOST)

    # -- re-adoption ----------------------------------------------------------
    def _adopt(self) -> None:
        found: dict[Key, tuple[Runtime, str]] = {}
        for runtime in self.runtimes.values():
            try:
                adopted = runtime.adopt(self.node_name)
            except RuntimeError_ as exc:
                log.error("cannot list %s attempts to re-adopt: %s", runtime.name, exc)
                continue
            for item in adopted:
                found[(item.job_id, item.attempt, item.replica)] = (runtime, item.handle)
        answer = self.client.adopt(self.node_name, sorted(found))
        for ref in answer.get("stop") or []:
            key = (ref["job_id"], int(ref["attempt"]), int(ref.get("replica", 0)))
            runtime, handle = found[key]
            log.info("stopping stale attempt %s found after restart", key)
            try:
                runtime.stop(handle, grace_s=1.0)
                runtime.cleanup(handle)
            except RuntimeError_ as exc:
                log.error("could not remove stale %s: %s", key, exc)
            with self._lock:
                self._ended.add(key)
        for item in answer.get("keep") or []:
            key = (item["job_id"], int(item["attempt"]), int(item.get("replica", 0)))
            if key not in found:
                continue
            runtime, handle = found[key]
            spec = LaunchSpec.from_dict(item["spec"])
            run = self._new_run(spec)
            run.handle, run.runtime, run.adopted = handle, runtime, True
            run.elapsed_s = float(item.get("elapsed_s") or 0.0)
            with self._lock:
                self._runs[key] = run
            log.info("re-adopted %s (%s %s)", key, runtime.name, handle[:12])
            threading.Thread(target=self._supervise, args=(run,), name=f"gpuq-run-{spec.job_id}", daemon=True).start()

    # -- commands (called by actors; return at once) -----------------------
    def _new_run(self, spec: LaunchSpec) -> _Run:
        logs = self.work_dir / "logs" / spec.job_id
        return _Run(spec, logs / f"{spec.attempt}.{spec.replica}.stdout", logs / f"{spec.attempt}.{spec.replica}.stderr")

    def ensure_running(self, spec: LaunchSpec) -> None:
        key = (spec.job_id, spec.attempt, spec.replica)
        with self._lock:
            if key in self._runs or key in self._ended or key in self._unreported or key[:2] in self._stopped:
                return  # duplicate or late delivery: already running, done or stopped
            run = self._new_run(spec)
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

    def _request_stop(self, run: _Run, reason: str, grace_s: float, *,
                      as_reason: ExitReason = ExitReason.STOPPED) -> None:
        if run.stop_event.is_set():
            return
        run.stop_reason = reason
        run.stop_as = as_reason
        run.stop_grace_s = grace_s
        run.stop_event.set()

    def running(self) -> list[Key]:
        with self._lock:
            return sorted(self._runs)

    # -- one attempt --------------------------------------------------------
    def _supervise(self, run: _Run) -> None:
        spec = run.spec
        key = (spec.job_id, spec.attempt, spec.replica)
        keep = False  # keep the container: its exit is not acknowledged yet
        try:
            if not run.adopted:
                try:
                    self.client.claim(spec)
                except Refused as exc:
                    log.info("not starting %s: %s", key, exc.detail)
                    return
                except ServiceUnavailable as exc:
                    # Never started: forget it, so the service's re-sent launch is not ignored.
                    log.warning("could not claim %s (%s); waiting for the launch to be re-sent", key, exc)
                    with self._lock:
                        self._runs.pop(key, None)
                    run.done.set()
                    return
                if run.stop_event.is_set():
                    keep = not self._report(run, ExitStatus(None, run.stop_as, run.stop_reason or "stopped"))
                    return
                try:
                    run.stdout_path.parent.mkdir(parents=True, exist_ok=True)
                    run.runtime = self._runtime_for(spec)
                    run.spec = spec = self._carve_mig(spec)
                    run.handle = self._launch(run)
                except LaunchError as exc:
                    keep = not self._report(run, ExitStatus(None, ExitReason.START_FAILED, str(exc)))
                    return
            else:
                run.stdout_path.parent.mkdir(parents=True, exist_ok=True)
            status = self._watch(run)
            self._ship_logs(run, final=True)
            keep = not self._report(run, status)
        except Exception as exc:  # noqa: BLE001 - never leave an attempt unreported
            log.exception("supervising %s failed", key)
            keep = not self._report(run, ExitStatus(None, ExitReason.LOST, f"agent error: {exc}"))
        finally:
            if not keep:
                self._cleanup(run)
            with self._lock:
                if self._runs.get(key) is run:
                    self._runs.pop(key, None)
                    self._ended.add(key)
            run.done.set()

    def _carve_mig(self, spec: LaunchSpec) -> LaunchSpec:
        """Create the MIG instances the placement chose and hand the job their MIG UUIDs.

        Simulated GPUs have nothing to carve: the job keeps the parent UUID.
        A failure (a busy overlapping instance, a driver error) is a launch error with the reason.
        """
        if not spec.mig_slices or self.inventory.gpu_source != "nvml":
            return spec
        from partitioner.catalog import model_for_nvml
        from workers.gpu.mig_apply import MigApplyError, ensure_instance

        gpus = {g.uuid: g for g in self.inventory.gpus}
        uuids = list(spec.gpu_uuids)
        for item in spec.mig_slices:
            gpu = gpus.get(item["gpu_uuid"])
            model = model_for_nvml(gpu.name, gpu.memory_mib, gpu.sm_count) if gpu else None
            profile = model.mig_profile(item["profile"]) if model else None
            if profile is None:
                raise LaunchError(f"{item['gpu_uuid']} has no MIG profile {item['profile']}")
            try:
                device = ensure_instance(item["gpu_uuid"], profile.profile_id, int(item["start"]))
            except MigApplyError as exc:
                raise LaunchError(f"cannot carve {item['profile']} at slice {item['start']}: {exc}") from exc
            uuids[int(item["index"])] = device.uuid
        threading.Thread(target=self._report_inventory, name="gpuq-agent-inventory", daemon=True).start()
        return replace(spec, gpu_uuids=uuids)

    def _report_inventory(self) -> None:
        """Re-probe NVML and re-register, so the service sees the new MIG devices and their UUIDs."""
        from workers.gpu.nvml import probe

        try:
            result = probe()
            if result.gpus:
                self.inventory = replace(self.inventory, gpus=list(result.gpus))
            self.client.register(self.inventory)
        except Exception:  # noqa: BLE001 - best effort: the next registration carries it too
            log.exception("re-reporting the inventory after MIG carving failed")

    def _launch(self, run: _Run) -> str:
        """Launch, waiting out an engine that is away (a daemon restart) for up to ``ENGINE_WAIT_S``.

        Reporting at once would burn the job's retries in a storm of instant
        failures while the engine restarts; a bad spec is a ``LaunchError``
        and is never retried here.
        """
        deadline = time.monotonic() + ENGINE_WAIT_S
        while True:
            try:
                return run.runtime.launch(run.spec, stdout_path=run.stdout_path, stderr_path=run.stderr_path)
            except LaunchError:
                raise
            except RuntimeError_ as exc:
                if time.monotonic() > deadline or run.stop_event.is_set() or self._stop.is_set():
                    raise
                log.warning("cannot launch %s yet (%s); waiting for the engine", run.spec.job_id, exc)
                time.sleep(1.0)

    def _cleanup(self, run: _Run) -> None:
        if run.handle is not None and run.runtime is not None:
            self._clean(run.runtime, run.handle)

    def _clean(self, runtime: Runtime, handle: str) -> bool:
        """Remove what is left of an attempt; if the engine is away, retry with the next heartbeats."""
        try:
            runtime.cleanup(handle)
        except Exception as exc:  # noqa: BLE001
            log.warning("cleanup of %s failed (%s); will retry", handle[:12], exc)
            with self._lock:
                self._to_clean[handle] = runtime
            return False
        with self._lock:
            self._to_clean.pop(handle, None)
        return True

    def _runtime_for(self, spec: LaunchSpec) -> Runtime:
        """Jobs with an image run in Docker, the others as host processes."""
        kind = "docker" if spec.image else "process"
        runtime = self.runtimes.get(kind)
        if runtime is None:
            have = ", ".join(sorted(self.runtimes)) or "none"
            raise LaunchError(f"node {self.node_name} has no {kind} runtime (it has: {have})")
        return runtime

    def _wait(self, run: _Run, timeout_s: float) -> ExitStatus | None:
        """The runtime's wait, riding out an engine that stops answering (e.g. a Docker daemon restart)."""
        try:
            return run.runtime.wait(run.handle, timeout_s)
        except RuntimeError_ as exc:
            if not run.engine_lost:
                log.error("runtime lost sight of %s: %s; waiting for it to come back", run.spec.job_id, exc)
            run.engine_lost = True
            time.sleep(POLL_S)
            return None

    def _engine_going_down(self, run: _Run) -> None:
        """A container killed by SIGTERM/SIGKILL that nobody here asked to stop: was it the engine shutting down?

        A stopping Docker daemon stops its containers first and closes its API
        a moment later; if the engine stops answering within ``ENGINE_PROBE_S``
        the exit is the infrastructure's (``engine_lost``), not the job's.
        """
        if run.runtime is None or run.runtime.name != "docker":
            return
        deadline = time.monotonic() + ENGINE_PROBE_S
        while time.monotonic() < deadline and not run.engine_lost:
            self._wait(run, 0)
            time.sleep(0.1)

    def _stop_and_wait(self, run: _Run, grace_s: float) -> ExitStatus | None:
        try:
            run.runtime.stop(run.handle, grace_s=grace_s)
        except RuntimeError_ as exc:
            log.error("could not stop %s: %s", run.spec.job_id, exc)
            return None
        return self._wait(run, 5.0)

    def _watch(self, run: _Run) -> ExitStatus:
        spec = run.spec
        limit = spec.time_limit_s
        deadline = time.monotonic() + max(0.0, limit - run.elapsed_s) if limit else None
        last_ship = time.monotonic()
        assert run.handle is not None and run.runtime is not None
        while True:
            timeout = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            status = self._wait(run, timeout)
            if status is not None:
                if run.stop_event.is_set() and status.reason in (ExitReason.EXITED, ExitReason.STOPPED):
                    return ExitStatus(status.exit_code, run.stop_as, run.stop_reason or "stopped")
                if status.reason is ExitReason.EXITED and status.exit_code in SIGNAL_EXITS:
                    self._engine_going_down(run)
                if run.engine_lost and status.exit_code != 0 and status.reason in (
                        ExitReason.EXITED, ExitReason.STOPPED):
                    return ExitStatus(status.exit_code, ExitReason.LOST,
                                      f"the {run.runtime.name} engine restarted under it (exit {status.exit_code})")
                return status
            if run.stop_event.is_set():
                status = self._stop_and_wait(run, run.stop_grace_s)
                if status is None:
                    continue  # the engine is away: try again
                return ExitStatus(status.exit_code, run.stop_as, run.stop_reason or "stopped")
            if deadline is not None and time.monotonic() >= deadline:
                status = self._stop_and_wait(run, spec.grace_s)
                if status is None:
                    continue
                return ExitStatus(status.exit_code, ExitReason.TIMED_OUT, f"time limit of {limit} s reached")
            if time.monotonic() - last_ship >= 1.0:
                self._ship_logs(run)
                last_ship = time.monotonic()

    def _ship_logs(self, run: _Run, *, final: bool = False) -> None:
        if run.handle is not None and run.runtime is not None:
            try:
                run.runtime.collect_logs(run.handle, stdout_path=run.stdout_path, stderr_path=run.stderr_path)
            except Exception:  # noqa: BLE001 - logs are best effort until the final flush
                log.debug("collecting logs of %s failed", run.spec.job_id, exc_info=True)
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

    def _report(self, run: _Run, status: ExitStatus) -> bool:
        """Tell the service how the attempt ended; False if it could not be told (kept for a later heartbeat)."""
        key = (run.spec.job_id, run.spec.attempt, run.spec.replica)
        try:
            self.client.exited(run.spec, exit_code=status.exit_code, reason=status.reason.value,
                               message=status.message)
        except Refused as exc:
            log.info("exit report for %s refused: %s", run.spec.job_id, exc.detail)
        except ServiceUnavailable:
            log.error("could not report the exit of %s; will retry with the next heartbeat", run.spec.job_id)
            with self._lock:
                self._unreported[key] = (run, status)
            return False
        return True

    def _flush_unreported(self) -> None:
        with self._lock:
            pending = list(self._unreported.items())
        for key, (run, status) in pending:
            self._ship_logs(run, final=True)
            try:
                self.client.exited(run.spec, exit_code=status.exit_code, reason=status.reason.value,
                                   message=status.message)
            except ServiceUnavailable:
                return
            except Refused as exc:
                log.info("late exit report for %s refused: %s", key, exc.detail)
            with self._lock:
                self._unreported.pop(key, None)
                self._ended.add(key)
            self._cleanup(run)

"""The Docker runtime: one attempt = one container, limited to exactly what was allocated.

Errors (all :class:`~workers.runtime.base.RuntimeError_`)::

    RuntimeError_
    ├── LaunchError        the attempt could not start (bad image, reserved env, MPS down)
    ├── DockerUnavailable  the engine does not answer
    └── DockerError        the engine refused an operation

Docker SDK exceptions never leave this module.

**Fencing** (the process shim's promise, for containers): with a
``state_dir`` every container gets a watchdog process of its own
(:mod:`workers.watchdog`, in its own session, so it outlives the agent)
that stops it once the agent has not renewed its local lease for half the
node lease (``renew``, after each answered heartbeat). An agent killed for
good therefore leaves no container running by the time the service
requeues the job elsewhere. ``wait`` reports a fenced container ``lost``
(cause ``fence``); ``adopt`` (re)starts a watchdog for every running
container it finds; ``cleanup`` ends it with the container.

What every container gets (see :func:`container_config`):

* ``command`` = the job's argv (a list, never a shell string); the image's
  ENTRYPOINT is kept, exactly as ``docker run IMAGE ARGV…`` would;
* CPU (``nano_cpus``), memory (``mem_limit`` = ``memswap_limit``: no swap),
  ``pids_limit``; every capability dropped, ``no-new-privileges``, not
  privileged, ``network_mode="none"`` by default, an init process (so SIGTERM
  reaches the job and zombies are reaped), no restart policy, no auto-remove
  (the exit state must survive until the agent has read it), no mounts at
  all except the host volumes its project allows (``spec.volumes``, checked at
  submit, read-only unless allowed read-write) and an MPS daemon's pipe and
  shm directories — never the Docker socket;
* labels ``gpuq.job``, ``gpuq.attempt``, ``gpuq.node``, ``gpuq.replica``
  (re-adoption) and a deterministic name ``gpuq-<job>-a<attempt>-r<replica>``
  (a re-delivered launch finds the container it already made instead of
  starting a second one).

GPU environment, and why:

* GPUs are granted only by a device request for the allocated UUIDs
  (``GPU-…`` or ``MIG-…``). ``NVIDIA_VISIBLE_DEVICES`` is always set by us:
  to the same UUIDs for GPU jobs, to ``void`` for jobs without GPUs. CUDA
  base images bake ``NVIDIA_VISIBLE_DEVICES=all`` into their ENV, and on
  hosts whose default runtime is ``nvidia`` that variable alone exposes every
  GPU; a container's env overrides the image's, and ``void`` makes the NVIDIA
  runtime behave like runc (no GPUs, no driver libraries).
* ``CUDA_VISIBLE_DEVICES`` is set to the allocated UUIDs, comma-joined in
  allocation order (``""`` without GPUs). Inside the container the devices
  are re-indexed from 0 by the container runtime, so host indices are
  meaningless there; UUIDs name the same devices on both sides, keep the
  job's device order equal to the allocation order (CUDA orders devices as
  listed), and match the ``CUDA_VISIBLE_DEVICES=<uuid>`` an MPS daemon runs
  with. CUDA accepts ``GPU-…`` and (11.1+) ``MIG-…`` UUIDs there.
* Block jobs (``spec.blocks``) run as MPS clients of their GPU's (or MIG
  instance's) daemon, which the agent's one MPS owner
  (:class:`workers.gpu.mps.MpsDaemons`, shared with the process runtime)
  starts at the first block job: its pipe dir is bound at the same path, its
  shm dir at ``/dev/shm``, the container runs as the device's MPS client uid
  (``user=<uid>:<gid>``: MPS serves one Unix user per server), and
  ``CUDA_MPS_PIPE_DIRECTORY``, ``CUDA_MPS_LOG_DIRECTORY``,
  ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=<blocks>`` and
  ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=<gpu_memory_mib>M"`` are set (device
  0: the daemon sees only its own device). A daemon that cannot start is a
  :class:`~workers.gpu.mps.MpsUnavailable` (the agent reports the attempt
  lost: the job waits, it never runs without its limits).
* User env may not set a reserved name (``workers.messages.reserved_env_name``:
  ``NVIDIA_*``, ``CUDA_VISIBLE_DEVICES``, ``CUDA_MPS_*``, ``LD_PRELOAD``,
  ``GPUQ_*``, ...; GPU-FACTS §4): such a spec is refused with ``LaunchError``
  (the API refuses it first; this is the last line).

Jobs also see ``GPUQ_JOB_ID``, ``GPUQ_ATTEMPT``, ``GPUQ_NODE``, ``GPUQ_REPLICA``,
``GPUQ_REPLICAS`` and their limits
as ``GPUQ_CPUS``, ``GPUQ_MEMORY_MIB``, ``GPUQ_GPU_UUIDS``, ``GPUQ_BLOCKS``,
``GPUQ_GPU_MEMORY_MIB``, ``GPUQ_TIME_LIMIT_S`` (see :func:`job_env`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workers.gpu.mps import MpsControl, MpsDaemon, MpsDaemons, mps_client_env
from workers.messages import LaunchSpec
from workers.runtime.base import Adopted, ExitReason, ExitStatus, LaunchError, RuntimeError_, check_user_env
from workers.runtime.limits import job_env

__all__ = [
    "DockerError",
    "DockerRuntime",
    "DockerUnavailable",
    "container_config",
    "container_name",
    "job_env",
    "job_volumes",
]

LABEL_JOB = "gpuq.job"
LABEL_ATTEMPT = "gpuq.attempt"
LABEL_NODE = "gpuq.node"
LABEL_REPLICA = "gpuq.replica"  # gang member index; two members of one gang may share a node

# With an init process (tini) as PID 1, an argv[0] that cannot be executed
# is not a start error from the engine but tini exiting 127 with a FATAL line.
_INIT_EXEC_FAILED = 127

_RUNNING_STATES = frozenset({"running", "restarting", "paused", "removing"})
DEFAULT_FENCE_AFTER_S = 15.0  # until the agent's first renewal says half its lease


class DockerUnavailable(RuntimeError_):
    """The Docker engine does not answer (not running, socket missing, timeout)."""


class DockerError(RuntimeError_):
    """The Docker engine refused or failed an operation."""


def container_name(spec: LaunchSpec) -> str:
    """``gpuq-<job>-a<attempt>-r<replica>``: unique per gang member of an attempt, so a re-sent launch is idempotent."""
    job = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.job_id)
    return f"gpuq-{job}-a{spec.attempt}-r{spec.replica}"


def container_config(
    spec: LaunchSpec,
    *,
    network_mode: str = "none",
    pids_limit: int = 4096,
    init: bool = True,
    mps_daemon: MpsDaemon | None = None,
    simulated_gpus: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` for ``spec`` (pure: no I/O).

    ``simulated_gpus``: the node's GPUs are declared (``--simulate-gpus``), not
    real: the job gets the same environment but no device request and no MPS
    mounts, so gpuq can be tried on a machine without a GPU.

    ``mps_daemon`` is required for block jobs (``spec.blocks`` set) and is the
    daemon of the job's one GPU / MIG device. Raises ``LaunchError`` for specs
    no container may be made from.
    """
    from docker.types import DeviceRequest  # the SDK's value type; no I/O

    if not spec.image:
        raise LaunchError("the docker runtime needs an image (spec.image is empty)")
    if not spec.command or isinstance(spec.command, str):
        raise LaunchError("command must be a non-empty argv list, never a shell string")
    check_user_env(spec.env)

    uuids = list(spec.gpu_uuids)
    env: dict[str, str] = {**spec.env, **job_env(spec)}
    env["NVIDIA_VISIBLE_DEVICES"] = ",".join(uuids) if uuids else "void"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)

    volumes: dict[str, dict[str, str]] = job_volumes(spec)
    if spec.blocks is not None and simulated_gpus:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(spec.blocks)
        if spec.gpu_memory_mib:
            env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={spec.gpu_memory_mib}M"
    elif spec.blocks is not None:
        if len(uuids) != 1:
            raise LaunchError(f"a block job runs on exactly one GPU or MIG device, got {len(uuids)}")
        if mps_daemon is None or mps_daemon.uuid != uuids[0]:
            raise LaunchError(f"block job needs the MPS daemon of {uuids[0]}")
        if not spec.gpu_memory_mib:
            raise LaunchError("a block job needs gpu_memory_mib (its MPS memory cap)")
        try:
            env.update(mps_client_env(mps_daemon, blocks=spec.blocks, memory_mib=spec.gpu_memory_mib))
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        volumes[str(mps_daemon.pipe_dir)] = {"bind": str(mps_daemon.pipe_dir), "mode": "rw"}
        volumes[str(mps_daemon.shm_dir)] = {"bind": "/dev/shm", "mode": "rw"}

    config: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": container_name(spec),
        "environment": env,
        "labels": {
            LABEL_JOB: spec.job_id,
            LABEL_ATTEMPT: str(spec.attempt),
            LABEL_NODE: spec.node_name,
            LABEL_REPLICA: str(spec.replica),
        },
        "detach": True,
        "network_mode": network_mode,
        "pids_limit": pids_limit,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "init": init,
        "volumes": volumes,
        "device_requests": [DeviceRequest(device_ids=uuids, capabilities=[["gpu"]])] if uuids and not simulated_gpus
        else [],
    }
    if mps_daemon is not None and spec.blocks is not None and not simulated_gpus and mps_daemon.uid is not None:
        gid = mps_daemon.gid if mps_daemon.gid is not None else mps_daemon.uid
        config["user"] = f"{mps_daemon.uid}:{gid}"  # the one Unix user its MPS server serves
    if spec.workdir is not None:
        config["working_dir"] = spec.workdir  # inside the container; else the image's WORKDIR
    if spec.cpus is not None:
        config["nano_cpus"] = round(spec.cpus * 1e9)
    if spec.memory_mib is not None:
        limit = f"{int(spec.memory_mib)}m"
        config["mem_limit"] = limit
        config["memswap_limit"] = limit  # equal to mem_limit: no swap on top of the limit
    return config


def job_volumes(spec: LaunchSpec) -> dict[str, dict[str, str]]:
    """The job's own host volumes as the SDK's ``volumes`` (host path -> bind, mode); each was allowed by its
    project at submit, and is checked again here: absolute, normalised, never ``/`` or the Docker socket."""
    out: dict[str, dict[str, str]] = {}
    for vol in spec.volumes:
        host, inside = str(vol.get("host_path", "")), str(vol.get("container_path", ""))
        for path in (host, inside):
            if not path.startswith("/") or path == "/" or posixpath.normpath(path) != path:
                raise LaunchError(f"volume path {path!r} must be absolute, normalised and not /")
        if host.endswith("docker.sock") or host in ("/var/run", "/run"):
            raise LaunchError(f"volume {host} would hand the job the Docker engine")
        out[host] = {"bind": inside, "mode": "ro" if vol.get("read_only", True) else "rw"}
    return out


@contextlib.contextmanager
def _docker_errors(action: str) -> Iterator[None]:
    """Turn the SDK's and requests' exceptions into this module's typed errors."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except RuntimeError_:
        raise
    except docker.errors.APIError as exc:  # first: APIError is also a requests HTTPError
        raise DockerError(f"{action}: {exc.explanation or exc}") from None
    except requests.exceptions.RequestException as exc:
        # Not only ConnectionError and Timeout: an engine stopping mid-answer cuts the response short
        # (ChunkedEncodingError: "Connection broken: IncompleteRead"), which is the engine going away too.
        raise DockerUnavailable(f"{action}: Docker engine not reachable ({exc.__class__.__name__})") from None
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(f"{action}: {exc}") from None


class DockerRuntime:
    """Runs attempts as Docker containers (see the module docstring for what each gets)."""

    name = "docker"

    def __init__(
        self,
        *,
        client: Any = None,
        network_mode: str = "none",
        pids_limit: int = 4096,
        mps_root: Path | None = None,
        mps: MpsDaemons | MpsControl | None = None,
        init: bool = True,
        simulated_gpus: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self._client = client
        # One watchdog per container (workers.watchdog) under state_dir/<container id>/: it stops the container
        # when the agent stops renewing its lease. None: no watchdogs (tests of the runtime alone).
        self.state_dir = state_dir
        self.fence_after_s = DEFAULT_FENCE_AFTER_S
        self._watchdogs: dict[str, subprocess.Popen] = {}  # our own children, reaped in cleanup
        self._watchdog_lock = threading.Lock()
        self.simulated_gpus = simulated_gpus
        self.network_mode = network_mode
        self.pids_limit = pids_limit
        self.init = init
        if isinstance(mps, MpsControl):
            mps = MpsDaemons(mps)
        self.mps: MpsDaemons | None = mps if mps is not None else (
            MpsDaemons(MpsControl(root=mps_root)) if mps_root is not None else None)
        # Handles this runtime stopped on request, so wait() reports STOPPED
        # rather than a plain exit; after an agent restart the agent knows.
        self._stopped: set[str] = set()

    @property
    def client(self) -> Any:
        """The Docker client, made on first use (so constructing never touches the engine)."""
        if self._client is None:
            import docker

            with _docker_errors("connect"):
                self._client = docker.from_env()
        return self._client

    # -- launch -----------------------------------------------------------

    def launch(self, spec: LaunchSpec, *, stdout_path: Path, stderr_path: Path) -> str:
        """Create and start the attempt's container; return its id (idempotent per attempt)."""
        import docker.errors

        check_user_env(spec.env)  # before an MPS daemon is started for it
        mps_daemon = None if self.simulated_gpus else self._mps_daemon(spec)
        config = container_config(
            spec, network_mode=self.network_mode, pids_limit=self.pids_limit, init=self.init, mps_daemon=mps_daemon,
            simulated_gpus=self.simulated_gpus,
        )
        self._ensure_image(spec.image or "")
        with _docker_errors(f"launch {config['name']}"):
            try:
                container = self.client.containers.create(**config)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: the name exists, i.e. this attempt was launched before
                    raise LaunchError(f"cannot create container for {spec.job_id}/{spec.attempt}: "
                                      f"{exc.explanation or exc}") from None
                container = self._existing(config["name"], spec)
            # The watchdog first, then the start: an agent killed between the two leaves a container that is
            # either never started or already watched, never one that runs unfenced while the job is requeued.
            self.ensure_watchdog(container.id, grace_s=spec.grace_s)
            if container.status == "created":
                try:
                    container.start()
                except docker.errors.APIError as exc:
                    # e.g. the argv[0] is not in the image: the container exists
                    # but cannot run; drop it so a retry starts clean.
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
                    self._drop_watchdog(container.id)
                    raise LaunchError(f"cannot start {spec.job_id}/{spec.attempt}: {exc.explanation or exc}") from None
        return str(container.id)

    def _existing(self, name: str, spec: LaunchSpec) -> Any:
        container = self.client.containers.get(name)
        labels = container.labels or {}
        # Name sanitising can collide: the container must carry this attempt's labels.
        if labels.get(LABEL_JOB) != spec.job_id or labels.get(LABEL_ATTEMPT) != str(spec.attempt):
            raise LaunchError(f"container name {name} is taken by a container that is not this attempt")
        return container

    def _mps_daemon(self, spec: LaunchSpec) -> MpsDaemon | None:
        if spec.blocks is None:
            return None
        if self.mps is None:
            raise LaunchError("block job on a runtime without MPS control (mps_root not configured)")
        if len(spec.gpu_uuids) != 1:
            raise LaunchError(f"a block job runs on exactly one GPU or MIG device, got {len(spec.gpu_uuids)}")
        return self.mps.ensure(spec.gpu_uuids[0])  # MpsUnavailable (a LaunchError) with the reason

    def _ensure_image(self, image: str) -> None:
        """Use the local image, else pull it once; any failure is a fast ``LaunchError``."""
        import docker.errors

        with _docker_errors(f"image {image}"):
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:  # e.g. an invalid reference
                raise LaunchError(f"bad image {image!r}: {exc.explanation or exc}") from None
            try:
                self.client.images.pull(image)
            except (docker.errors.APIError, docker.errors.DockerException) as exc:
                message = getattr(exc, "explanation", None) or str(exc)
                raise LaunchError(f"image {image!r} not found locally and pull failed: {message}") from None

    # -- watch, stop, logs, cleanup ----------------------------------------

    def wait(self, handle: str, timeout_s: float | None = None) -> ExitStatus | None:
        """Block up to ``timeout_s`` (None: until it ends) for the container to exit.

        The exit is read from the container's state, not from the wait call,
        so it is the same after an agent or engine restart (GPU-FACTS §4).
        """
        import docker.errors
        import requests.exceptions

        if timeout_s is None or timeout_s > 0:
            try:
                self.client.api.wait(handle, timeout=timeout_s)
            except requests.exceptions.RequestException:
                pass  # read timeout: still running (inspect below tells, or raises if the engine is gone)
            except docker.errors.DockerException:
                pass  # e.g. 404: inspect below reports LOST
        with _docker_errors(f"inspect {handle[:12]}"):
            try:
                state = self.client.api.inspect_container(handle)["State"]
            except docker.errors.NotFound:
                return ExitStatus(None, ExitReason.LOST, f"container {handle[:12]} is gone")
        return self._exit_status(handle, state)

    def _exit_status(self, handle: str, state: dict[str, Any]) -> ExitStatus | None:
        status = state.get("Status", "")
        if status == "created":
            # launch() starts what it creates before returning, so a created
            # container seen here is one whose start never happened.
            return ExitStatus(None, ExitReason.START_FAILED, state.get("Error") or "created but never started")
        if status in _RUNNING_STATES:
            return None
        code = state.get("ExitCode")
        if state.get("OOMKilled"):
            return ExitStatus(code, ExitReason.OOM_KILLED, "killed by the kernel: memory limit reached")
        if state.get("Error"):
            return ExitStatus(code, ExitReason.START_FAILED, state["Error"])
        if self._fenced(handle):
            return ExitStatus(code, ExitReason.LOST, "fenced: the agent did not renew the container's lease",
                              cause="fence")
        if handle in self._stopped:
            return ExitStatus(code, ExitReason.STOPPED, "stopped on request")
        if code == _INIT_EXEC_FAILED and self.init:
            failure = self._init_exec_failure(handle)
            if failure:
                return ExitStatus(code, ExitReason.START_FAILED, failure)
        return ExitStatus(code, ExitReason.EXITED, "")

    def _init_exec_failure(self, handle: str) -> str:
        """tini's own "exec … failed" line, if the job's argv[0] could not be run."""
        import docker.errors

        try:
            tail = self.client.api.logs(handle, stdout=False, stderr=True, tail=5)
        except docker.errors.DockerException:
            return ""
        for line in tail.decode(errors="replace").splitlines():
            if "[FATAL tini" in line and "exec " in line:
                return line.strip()
        return ""

    def stop(self, handle: str, *, grace_s: float) -> None:
        """SIGTERM, SIGKILL after ``grace_s`` (whole seconds, rounded up); returns once stopped."""
        import docker.errors

        self._stopped.add(handle)
        with _docker_errors(f"stop {handle[:12]}"):
            try:
                self.client.api.stop(handle, timeout=max(0, math.ceil(grace_s)))
            except docker.errors.NotFound:
                return

    def collect_logs(self, handle: str, *, stdout_path: Path, stderr_path: Path) -> None:
        """Rewrite the two files with the container's whole stdout and stderr."""
        import docker.errors

        with _docker_errors(f"logs {handle[:12]}"):
            try:
                out = self.client.api.logs(handle, stdout=True, stderr=False)
                err = self.client.api.logs(handle, stdout=False, stderr=True)
            except docker.errors.NotFound:
                return  # removed already: the files hold what was collected before
        Path(stdout_path).write_bytes(out)
        Path(stderr_path).write_bytes(err)

    def cleanup(self, handle: str) -> None:
        """Remove the container (forcefully); already gone is fine."""
        import docker.errors

        self._stopped.discard(handle)
        with _docker_errors(f"remove {handle[:12]}"):
            try:
                self.client.api.remove_container(handle, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "in progress" not in str(exc.explanation or ""):
                    raise
                # else a concurrent cleanup is removing it
        self._drop_watchdog(handle)

    def adopt(self, node_name: str) -> list[Adopted]:
        """Every gpuq container of ``node_name`` still on this engine, running or exited.

        Exited ones are returned too: ``cleanup`` removes a container only
        after its exit and logs were collected, so one still present holds an
        exit nobody has reported yet. The agent calls ``wait`` on each handle
        (it returns at once for those) and reports, then cleans up.
        """
        with _docker_errors("list containers"):
            found = self.client.api.containers(all=True, filters={"label": [f"{LABEL_NODE}={node_name}"]})
        adopted = []
        for item in found:
            labels = item.get("Labels") or {}
            try:
                attempt = int(labels.get(LABEL_ATTEMPT, ""))
            except ValueError:
                continue  # not ours to interpret
            if LABEL_JOB in labels:
                if item.get("State") == "running":  # fenced from now on, whatever the service answers
                    self.ensure_watchdog(item["Id"])
                replica = int(labels.get(LABEL_REPLICA, "0") or 0) if labels.get(LABEL_REPLICA, "0").isdigit() else 0
                adopted.append(Adopted(job_id=labels[LABEL_JOB], attempt=attempt, handle=item["Id"], replica=replica))
        return adopted

    # -- watchdogs: the container's lease (workers.watchdog) -----------------

    def _watch_dir(self, handle: str) -> Path | None:
        if self.state_dir is None or not re.fullmatch(r"[0-9a-f]{12,64}", handle):
            return None
        return self.state_dir / handle

    def ensure_watchdog(self, handle: str, *, grace_s: float = 10.0) -> None:
        """Start the container's watchdog unless one runs (its lease renewed now); no-op without ``state_dir``."""
        run_dir = self._watch_dir(handle)
        if run_dir is None:
            return
        with self._watchdog_lock:
            if self._watchdog_alive(handle):
                self._renew_one(run_dir)
                return
            run_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            run_dir.mkdir(exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError):
                (run_dir / "fenced.json").unlink()  # a fence of an earlier watchdog is the agent's to have read
            (run_dir / "spec.json").write_text(json.dumps({"container": handle, "grace_s": grace_s}))
            self._renew_one(run_dir)
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "workers.watchdog", str(run_dir)], stdin=subprocess.DEVNULL,
                    stdout=open(run_dir / "watchdog.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115 - child's
                    start_new_session=True, close_fds=True, env=_watchdog_env(),
                )
            except OSError as exc:
                raise DockerError(f"cannot start the watchdog of {handle[:12]}: {exc}") from exc
            self._watchdogs[handle] = proc

    def renew(self, fence_after_s: float | None = None) -> None:
        """Renew every container's local lease (after an answered heartbeat): the watchdogs fence without it."""
        if fence_after_s is not None:
            self.fence_after_s = fence_after_s
        if self.state_dir is None:
            return
        with contextlib.suppress(FileNotFoundError):
            for run_dir in self.state_dir.iterdir():
                if run_dir.is_dir() and not (run_dir / "fenced.json").exists():
                    self._renew_one(run_dir)

    def _renew_one(self, run_dir: Path) -> None:
        with contextlib.suppress(OSError):
            (run_dir / "lease").write_text(f"{self.fence_after_s:g}")

    def _fenced(self, handle: str) -> bool:
        run_dir = self._watch_dir(handle)
        return run_dir is not None and (run_dir / "fenced.json").exists()

    def _watchdog_pid(self, handle: str) -> int | None:
        run_dir = self._watch_dir(handle)
        if run_dir is None:
            return None
        try:
            pid = int((run_dir / "watchdog.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        if state == "Z" or b"workers.watchdog" not in cmdline or str(run_dir).encode() not in cmdline:
            return None
        return pid

    def _watchdog_alive(self, handle: str) -> bool:
        proc = self._watchdogs.get(handle)
        if proc is not None and proc.poll() is None:
            return True
        return self._watchdog_pid(handle) is not None

    def _drop_watchdog(self, handle: str) -> None:
        """The container is removed: end its watchdog (it would exit by itself within a second) and its dir."""
        run_dir = self._watch_dir(handle)
        if run_dir is None:
            return
        with self._watchdog_lock:
            pid = self._watchdog_pid(handle)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            proc = self._watchdogs.pop(handle, None)
            if proc is not None:  # our own child, perhaps too young to have written its pid file yet
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            shutil.rmtree(run_dir, ignore_errors=True)


def _watchdog_env() -> dict[str, str]:
    """The watchdog's environment: enough to import gpuq and reach this engine (DOCKER_*), no agent secrets."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ") or k.startswith("DOCKER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env

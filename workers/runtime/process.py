"""Bare-metal runtime: each attempt under its own shim, in its own cgroup, as the job user.

- **Shim** (:mod:`workers.shim`): started in its own session, it starts the
  job, keeps its exit in ``RUN_DIR/exit.json`` and fences it when the agent
  stops renewing its lease (``renew``). It outlives the agent and ``gpuq
  serve``, so an agent that restarts re-adopts live attempts (``adopt``)
  and reads the exits of those that ended while it was away, exactly once.
  The handle is the run directory's name, ``<job>.<attempt>.<replica>``.
- **Limits**: with a cgroup probe (:mod:`workers.runtime.cgroups`) the job's
  memory (swap off), CPU quota and pids are enforced, the whole group is
  killed at the end, and an OOM kill is reported as ``oom_killed``; without
  one (``limits: env-only``) they travel in the environment only.
- **User**: as root, the job runs as the job user (:mod:`workers.runtime.jobuser`)
  in a work directory it owns; run directories and logs stay root's (0700).
- **Environment**: only a few host variables, its own ``env`` and gpuq's
  limits (``CUDA_VISIBLE_DEVICES`` = the allocated UUIDs, ...), never the
  agent's secrets; a reserved name in ``env`` is refused.
- **Block jobs** (``spec.blocks``) with an MPS owner (``mps``, the agent's one
  :class:`~workers.gpu.mps.MpsDaemons`, shared with the Docker runtime): the
  device's daemon is started first (or the launch fails with
  :class:`~workers.gpu.mps.MpsUnavailable`: the job never runs unlimited), the
  job gets ``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` beside its
  thread percentage and pinned memory limit, and runs as the device's MPS
  client uid instead of a per-attempt one (MPS serves one Unix user per
  server; see :mod:`workers.gpu.mps`). Without an MPS owner (simulated GPUs)
  the limits travel in the environment only.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from workers.gpu.mps import MpsDaemon, MpsDaemons, mps_client_env
from workers.messages import LaunchSpec, expand_output_path, output_pattern_problem
from workers.runtime.base import Adopted, ExitReason, ExitStatus, LaunchError, NodeFault, check_user_env
from workers.runtime.cgroups import DEFAULT_PIDS_MAX, CgroupError, JobCgroup, Limits, Probe
from workers.runtime.jobuser import JobUser
from workers.runtime.limits import limits_env
from workers.shim import cgroup_of

HOST_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")
START_WAIT_S = 10.0  # how long launch waits for the shim to say the job started (or could not)
POLL_S = 0.02
DEFAULT_FENCE_AFTER_S = 15.0


class ProcessRuntime:
    """Runs attempts as local processes, one shim each."""

    name = "process"

    def __init__(self, *, work_dir: Path | None = None, state_dir: Path | None = None,
                 cgroups: Probe | None = None, job_user: JobUser | None = None,
                 pids_max: int = DEFAULT_PIDS_MAX, mps: MpsDaemons | None = None) -> None:
        self.work_dir = work_dir
        if state_dir is None:
            state_dir = work_dir.parent / "shims" if work_dir is not None else Path(tempfile.mkdtemp(prefix="gpuq-"))
        self.state_dir = state_dir
        self.cgroups = cgroups if cgroups is not None and cgroups.layout is not None else None
        self.job_user = job_user
        self.pids_max = pids_max
        self.mps = mps  # the agent's MPS owner; None: block limits travel in the environment only
        self.fence_after_s = DEFAULT_FENCE_AFTER_S
        self._shims: dict[str, subprocess.Popen] = {}  # our own children, reaped here
        self._stopped: set[str] = set()
        self._lock = threading.Lock()
        self._uid_lock = threading.Lock()

    @property
    def limits(self) -> str:
        """``enforced`` (cgroups) or ``env-only``: what the node reports in its inventory."""
        return "enforced" if self.cgroups is not None else "env-only"

    def environment(self, spec: LaunchSpec, mps_daemon: MpsDaemon | None = None) -> dict[str, str]:
        """The exact environment the job gets (a block job's MPS client variables with ``mps_daemon``)."""
        env = {k: os.environ[k] for k in HOST_ENV_KEEP if k in os.environ}
        user = self.job_user
        if user is not None and user.switch:
            env.update(HOME=self._cwd(spec).as_posix() if self.work_dir else "/", USER=user.name, LOGNAME=user.name)
        else:
            env.update({k: os.environ[k] for k in ("HOME", "USER", "LOGNAME", "TMPDIR") if k in os.environ})
        env.update(spec.env)
        env.update(limits_env(spec))  # last: the allocation always wins
        if mps_daemon is not None and spec.blocks is not None and spec.gpu_memory_mib:
            env.update(mps_client_env(mps_daemon, blocks=spec.blocks, memory_mib=spec.gpu_memory_mib))
        return env

    # -- paths ---------------------------------------------------------------
    def _run_dir(self, handle: str) -> Path:
        return self.state_dir / handle

    @staticmethod
    def handle_of(spec: LaunchSpec) -> str:
        return f"{spec.job_id}.{spec.attempt}.{spec.replica}"

    def _cwd(self, spec: LaunchSpec) -> Path:
        assert self.work_dir is not None
        return self.work_dir / f"{spec.job_id}-{spec.attempt}-{spec.replica}"

    def _cgroup(self, handle: str) -> JobCgroup | None:
        if self.cgroups is None or self.cgroups.layout is None:
            return None
        return JobCgroup(self.cgroups.layout, f"{self.cgroups.parent}/{handle}")

    # -- launch ----------------------------------------------------------------
    def launch(self, spec: LaunchSpec, *, stdout_path: Path, stderr_path: Path) -> str:
        check_user_env(spec.env)  # the API refuses these first; a spec that bypassed it is refused here
        if spec.volumes:  # so does the API (volumes need an image): a host process sees the host as its user does
            raise LaunchError("host volumes are mounted by the Docker runtime only; a host-process job takes none")
        if spec.workdir is not None and not Path(spec.workdir).is_dir():  # the job's own; never made here
            raise LaunchError(f"working directory {spec.workdir} does not exist on node {spec.node_name}")
        handle = self.handle_of(spec)
        run_dir = self._run_dir(handle)
        if self._shim_alive(handle) or (run_dir / "exit.json").exists():
            return handle  # a re-sent launch of an attempt this node already runs (or ran)
        mps_daemon = self._mps_daemon(spec)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(run_dir)
        run_dir.mkdir(mode=0o700)
        stdout_path.parent.mkdir(parents=True, exist_ok=True)
        user = self.job_user if self.job_user is not None and self.job_user.switch else None
        if user is not None and mps_daemon is not None and mps_daemon.uid is not None:
            uid: int | None = mps_daemon.uid  # the device's MPS client uid (one server per Unix user)
            (run_dir / "uid").write_text(str(uid))
        else:
            uid = None if user is None else self._claim_uid(user, run_dir)
        cwd = Path(spec.workdir) if spec.workdir is not None else None
        if cwd is None and self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.work_dir, 0o711)  # others may enter their own dir, not list the others
            cwd = self._cwd(spec)
            cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
            if user is not None and uid is not None:
                os.chown(cwd, uid, user.gid)
        group = self._cgroup(handle)
        if group is not None:
            try:
                group.create(Limits(memory_mib=spec.memory_mib, cpus=spec.cpus, pids_max=self.pids_max))
            except CgroupError as exc:
                raise NodeFault(f"cgroup: {exc}") from exc
        shim_spec: dict[str, Any] = {
            "key": [spec.job_id, spec.attempt, spec.replica], "node_name": spec.node_name,
            "command": spec.command, "env": self.environment(spec, mps_daemon), "cwd": str(cwd) if cwd else None,
            "stdout": str(stdout_path), "stderr": str(stderr_path), "grace_s": spec.grace_s,
            "memory_mib": spec.memory_mib, "uid": uid, "gid": user.gid if user else None,
            **self._output_files(spec, uid),
            "cgroup": None if group is None else {
                "name": group.name, "version": group.layout.version,
                "unified": str(group.layout.unified) if group.layout.unified else None,
                "v1": {k: str(v) for k, v in group.layout.v1.items()},
            },
        }
        (run_dir / "spec.json").write_text(json.dumps(shim_spec))
        self._renew_one(run_dir)
        try:
            shim = subprocess.Popen(
                [sys.executable, "-m", "workers.shim", str(run_dir)], stdin=subprocess.DEVNULL,
                stdout=open(run_dir / "shim.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115 - the child owns it
                start_new_session=True, close_fds=True, env=_shim_env(),
            )
        except OSError as exc:
            self._discard(handle)
            raise LaunchError(f"cannot start the shim: {exc}") from exc
        with self._lock:
            self._shims[handle] = shim
        deadline = time.monotonic() + START_WAIT_S
        while not (run_dir / "job.pid").exists():
            exit_file = _read(run_dir / "exit.json")
            if exit_file is not None and "start_error" in exit_file:
                self._discard(handle)
                raise LaunchError(exit_file["start_error"])
            if shim.poll() is not None and not (run_dir / "job.pid").exists() and exit_file is None:
                log_text = (run_dir / "shim.log").read_text(errors="replace")[-500:]
                self._discard(handle)
                raise LaunchError(f"the shim died before the job started: {log_text.strip()}")
            if time.monotonic() > deadline:
                break  # slow host: the shim carries on; wait() reports what happens
            time.sleep(POLL_S)
        return handle

    def _mps_daemon(self, spec: LaunchSpec) -> MpsDaemon | None:
        """A block job's device daemon, started if need be (``MpsUnavailable`` if it cannot run)."""
        if spec.blocks is None or self.mps is None:
            return None
        if len(spec.gpu_uuids) != 1:
            raise LaunchError(f"a block job runs on exactly one GPU or MIG device, got {len(spec.gpu_uuids)}")
        if not spec.gpu_memory_mib:
            raise LaunchError("a block job needs gpu_memory_mib (its MPS memory cap)")
        return self.mps.ensure(spec.gpu_uuids[0])

    @staticmethod
    def _output_files(spec: LaunchSpec, uid: int | None) -> dict[str, str]:
        """``--output`` / ``--error`` expanded for this attempt (the shim opens them as the job user).

        Checked here again: a spec that did not come through the API gets the same refusal.
        """
        files: dict[str, str] = {}
        for key, name, pattern in (("output_file", "output", spec.output), ("error_file", "error", spec.error)):
            if pattern is None:
                continue
            problem = output_pattern_problem(pattern, workdir=spec.workdir)
            if problem is not None:
                raise LaunchError(f"{name}: {problem}")
            files[key] = expand_output_path(pattern, spec, user=_user_name(os.getuid() if uid is None else uid))
        return files

    def _claim_uid(self, user: JobUser, run_dir: Path) -> int:
        """The job user's uid, or (per-attempt uids) the lowest one no run of this node holds (``RUN_DIR/uid``)."""
        if user.uids is None:
            return user.uid
        with self._uid_lock:
            held = set() if self.mps is None else self.mps.uids()  # MPS devices' client uids are not free
            with contextlib.suppress(FileNotFoundError):
                for other in self.state_dir.iterdir():
                    uid = _read_int(other / "uid")
                    if uid is not None:
                        held.add(uid)
            for uid in user.uids:
                if uid not in held:
                    (run_dir / "uid").write_text(str(uid))
                    return uid
        raise LaunchError(f"no free job uid left in {user.uids.start}-{user.uids.stop - 1} (GPUQ_JOB_UIDS)")

    # -- leases ----------------------------------------------------------------
    def renew(self, fence_after_s: float | None = None) -> None:
        """Renew every live shim's local lease (after an answered heartbeat): the shims fence without it."""
        if fence_after_s is not None:
            self.fence_after_s = fence_after_s
        with contextlib.suppress(FileNotFoundError):
            for run_dir in self.state_dir.iterdir():
                if run_dir.is_dir() and not (run_dir / "exit.json").exists():
                    self._renew_one(run_dir)

    def _renew_one(self, run_dir: Path) -> None:
        with contextlib.suppress(OSError):
            (run_dir / "lease").write_text(f"{self.fence_after_s:g}")

    # -- watching --------------------------------------------------------------
    def _shim_alive(self, handle: str) -> bool:
        with self._lock:
            shim = self._shims.get(handle)
        if shim is not None:
            return shim.poll() is None
        pid = _read_int(self._run_dir(handle) / "shim.pid")
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z" and b"workers.shim" in cmdline and str(self._run_dir(handle)).encode() in cmdline

    def wait(self, handle: str, timeout_s: float | None = None) -> ExitStatus | None:
        run_dir = self._run_dir(handle)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            data = _read(run_dir / "exit.json")
            if data is not None:
                return self._status(handle, data)
            if not run_dir.exists():
                return ExitStatus(None, ExitReason.LOST, "attempt unknown to this node")
            if not self._shim_alive(handle):
                data = _read(run_dir / "exit.json")  # it may have written its file and exited just now
                if data is not None:
                    return self._status(handle, data)
                self._kill_job(handle)
                return ExitStatus(None, ExitReason.LOST, "the attempt's shim is gone (exit code unknown)")
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S if deadline is None else min(0.05, max(0.0, deadline - time.monotonic())))

    def _status(self, handle: str, data: dict[str, Any]) -> ExitStatus:
        if "start_error" in data:
            return ExitStatus(None, ExitReason.START_FAILED, data["start_error"])
        code = data.get("exit_code")
        spec = _read(self._run_dir(handle) / "spec.json") or {}
        if data.get("oom_kills"):
            return ExitStatus(code, ExitReason.OOM_KILLED, f"out of memory (limit {spec.get('memory_mib')} MiB)")
        if handle in self._stopped:
            return ExitStatus(code, ExitReason.STOPPED, "stopped by the agent")
        if data.get("fenced"):
            return ExitStatus(code, ExitReason.LOST, "fenced: the agent did not renew the attempt's lease",
                              cause="fence")
        return ExitStatus(code, ExitReason.EXITED)

    def stamps(self, handle: str) -> tuple[float, float] | None:
        """(started_at, ended_at) wall-clock seconds of an ended attempt, as its shim saw them."""
        data = _read(self._run_dir(handle) / "exit.json")
        if data is None:
            return None
        return float(data["started_at"]), float(data["ended_at"])

    # -- stopping ----------------------------------------------------------------
    def stop(self, handle: str, *, grace_s: float) -> None:
        run_dir = self._run_dir(handle)
        if (run_dir / "exit.json").exists():
            return
        self._stopped.add(handle)
        pgid = _read_int(run_dir / "job.pid")
        if pgid is not None:
            _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + max(grace_s, 0.0)
        while time.monotonic() < deadline and not (run_dir / "exit.json").exists():
            if not self._shim_alive(handle):
                break
            time.sleep(POLL_S)
        self._kill_job(handle)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._shim_alive(handle) and not (run_dir / "exit.json").exists():
            time.sleep(POLL_S)

    def _kill_job(self, handle: str) -> None:
        """SIGKILL the job's process group and everything in its cgroup (its shim then records the exit)."""
        pgid = _read_int(self._run_dir(handle) / "job.pid")
        if pgid is not None:
            _killpg(pgid, signal.SIGKILL)
        spec = _read(self._run_dir(handle) / "spec.json")
        group = cgroup_of(spec) if spec else self._cgroup(handle)
        if group is not None:
            group.kill()

    def collect_logs(self, handle: str, *, stdout_path: Path, stderr_path: Path) -> None:
        """The job writes to the files itself (they are the spool)."""

    def cleanup(self, handle: str) -> None:
        if self._shim_alive(handle):
            self._kill_job(handle)
            deadline = time.monotonic() + 5.0
            while self._shim_alive(handle) and time.monotonic() < deadline:
                time.sleep(POLL_S)
        self._discard(handle)

    def _discard(self, handle: str) -> None:
        run_dir = self._run_dir(handle)
        spec = _read(run_dir / "spec.json")
        group = cgroup_of(spec) if spec else self._cgroup(handle)
        if not (run_dir / "exit.json").exists():  # else its shim killed the group already (and the pgid is free)
            self._kill_job(handle)
        if group is not None:
            group.remove()
        with self._lock:
            shim = self._shims.pop(handle, None)
            self._stopped.discard(handle)
        if shim is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                shim.wait(timeout=5)
        shutil.rmtree(run_dir, ignore_errors=True)

    # -- re-adoption -------------------------------------------------------------
    def adopt(self, node_name: str) -> list[Adopted]:
        """Every attempt of this node a shim still holds (running, or ended with its exit unread)."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for run_dir in sorted(self.state_dir.iterdir()):
                spec = _read(run_dir / "spec.json")
                if spec is None or spec.get("node_name") != node_name:
                    continue
                job_id, attempt, replica = spec["key"]
                found.append(Adopted(job_id, int(attempt), run_dir.name, int(replica)))
        return found


def _shim_env() -> dict[str, str]:
    """The shim's own environment: enough to import gpuq, none of the agent's secrets."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # a per-attempt uid without a passwd entry


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)

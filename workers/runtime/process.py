"""Bare-metal runtime: the job as a process in its own process group.

Limits travel in the environment (``CUDA_VISIBLE_DEVICES`` = the allocated
UUIDs, MPS thread percentage and pinned memory for block jobs); the agent
enforces the time limit. The job gets a clean environment: only a few host
variables, its own ``env`` and gpuq's limits, never the agent's secrets.
A spec whose ``env`` sets a reserved name (``CUDA_VISIBLE_DEVICES``,
``GPUQ_*``, ...: ``workers.messages.reserved_env_name``) is refused.

Processes cannot be re-adopted after an agent restart (exit codes of
non-children are unknowable), so ``adopt`` returns nothing: the service's
lease and requeue logic covers that case.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from workers.messages import LaunchSpec
from workers.runtime.base import Adopted, ExitReason, ExitStatus, LaunchError, check_user_env
from workers.runtime.limits import limits_env

HOST_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")


class ProcessRuntime:
    """Runs attempts as local processes."""

    name = "process"

    def __init__(self, *, work_dir: Path | None = None) -> None:
        self.work_dir = work_dir
        self._procs: dict[str, subprocess.Popen] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        """The exact environment the job gets."""
        env = {k: os.environ[k] for k in HOST_ENV_KEEP if k in os.environ}
        env.update(spec.env)
        env.update(limits_env(spec))  # last: the allocation always wins
        return env

    def launch(self, spec: LaunchSpec, *, stdout_path: Path, stderr_path: Path) -> str:
        check_user_env(spec.env)  # the API refuses these first; a spec that bypassed it is refused here
        stdout_path.parent.mkdir(parents=True, exist_ok=True)
        cwd = None
        if spec.workdir is not None:  # the job's own directory: it must exist here, it is never made
            cwd = Path(spec.workdir)
            if not cwd.is_dir():
                raise LaunchError(f"working directory {spec.workdir} does not exist on node {spec.node_name}")
        elif self.work_dir is not None:
            cwd = self.work_dir / f"{spec.job_id}-{spec.attempt}-{spec.replica}"
            cwd.mkdir(parents=True, exist_ok=True)
        try:
            with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
                proc = subprocess.Popen(
                    spec.command, env=self.environment(spec), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                    cwd=cwd, start_new_session=True, close_fds=True,
                )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise LaunchError(f"cannot run {spec.command[0]!r}: {exc.strerror or exc}") from exc
        except OSError as exc:
            raise LaunchError(f"cannot start {spec.command[0]!r}: {exc}") from exc
        handle = str(proc.pid)
        with self._lock:
            self._procs[handle] = proc
        return handle

    def wait(self, handle: str, timeout_s: float | None = None) -> ExitStatus | None:
        proc = self._procs.get(handle)
        if proc is None:
            return ExitStatus(None, ExitReason.LOST, "process unknown to this agent")
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        # A negative code is death by signal; report it the way shells and Docker do (128 + n).
        code = code if code >= 0 else 128 - code
        if handle in self._stopped:
            return ExitStatus(code, ExitReason.STOPPED, "stopped by the agent")
        return ExitStatus(code, ExitReason.EXITED)

    def stop(self, handle: str, *, grace_s: float) -> None:
        proc = self._procs.get(handle)
        if proc is None or proc.poll() is not None:
            return
        self._stopped.add(handle)
        self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + max(grace_s, 0.0)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        # Kill the whole group even if the leader exited: children must not outlive the job.
        self._signal_group(proc, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone, or not ours any more
            os.killpg(proc.pid, sig)

    def collect_logs(self, handle: str, *, stdout_path: Path, stderr_path: Path) -> None:
        """The process writes to the files itself."""

    def cleanup(self, handle: str) -> None:
        with self._lock:
            proc = self._procs.pop(handle, None)
            self._stopped.discard(handle)
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()
        elif proc is not None:
            self._signal_group(proc, signal.SIGKILL)  # stray children of an exited leader

    def adopt(self, node_name: str) -> list[Adopted]:
        return []

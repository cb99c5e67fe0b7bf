"""The per-attempt shim: one small supervisor per host-process attempt, outliving the agent that started it.

Why (the pattern of HTCondor's starter and of conmon / containerd-shim): an
agent that dies or restarts must neither leave a job unsupervised nor lose
its exit code, and a job whose agent lost its lease must be gone before the
service may requeue it elsewhere. So the agent starts, in its own session,
``python -m workers.shim RUN_DIR``; the shim

1. starts the job in its own session, in its cgroup (joined before ``exec``),
   as the job user, with stdout/stderr appended to the attempt's log files
   (the files are the spool: an agent that comes back ships from where the
   service's offsets say);
2. forwards SIGTERM / SIGINT / SIGHUP it receives to the job's process group;
3. **fences**: the agent renews the shim's local lease (the mtime of
   ``RUN_DIR/lease``, whose content is the fence delay in seconds) after each
   answered heartbeat; unrenewed for that long (half the node lease), the
   shim stops the job (SIGTERM, grace, SIGKILL of the whole cgroup) and
   records ``fenced``;
4. with ``--output`` / ``--error`` (``output_file`` / ``error_file`` in the spec, expanded by the
   runtime), opens those files **as the job user** (its own permissions decide; directories made
   as it; never through a final symlink, ``O_NOFOLLOW``; regular files only) and copies the job's
   stream to both the file and the attempt's log (the service keeps shipping it); a file the job
   user could not write fails the start with the reason;
5. when the job ends, kills what is left of its group, then writes
   ``RUN_DIR/exit.json`` atomically (exit code, OOM kills, fenced, start and
   end stamps) and exits: the agent, this one or the next, reads it exactly once.

``RUN_DIR/spec.json`` is written by :class:`workers.runtime.process.ProcessRuntime`.
This module imports only the standard library and :mod:`workers.runtime.cgroups`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workers.runtime.cgroups import JobCgroup, Layout

POLL_S = 0.05
FENCE_GRACE_CAP_S = 5.0  # the most a fencing stop waits before SIGKILL
DEFAULT_FENCE_AFTER_S = 15.0


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees all of it or nothing)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def cgroup_of(spec: dict[str, Any]) -> JobCgroup | None:
    """The attempt's cgroup as ``spec.json`` describes it (None: env-only limits)."""
    cg = spec.get("cgroup")
    if not cg:
        return None
    layout = Layout(version=cg["version"], unified=Path(cg["unified"]) if cg.get("unified") else None,
                    v1={k: Path(v) for k, v in cg.get("v1", {}).items()})
    return JobCgroup(layout, cg["name"])


def fence_after_s(lease: Path) -> float:
    try:
        return float(lease.read_text().strip() or DEFAULT_FENCE_AFTER_S)
    except (OSError, ValueError):
        return DEFAULT_FENCE_AFTER_S


def lease_expired(lease: Path) -> bool:
    try:
        age = time.time() - lease.stat().st_mtime
    except OSError:
        return True  # the run dir is gone: nobody supervises this job any more
    return age > fence_after_s(lease)


def _preexec(procs: list[str], uid: int | None, gid: int | None) -> Any:
    def join_then_drop() -> None:
        # Join the cgroup first (root writes cgroup.procs), then drop privileges for good.
        pid = str(os.getpid()).encode()
        for path in procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    return join_then_drop


class OutputRefused(Exception):
    """An ``--output`` / ``--error`` file the job user cannot have (the message says why)."""


def open_as_job_user(path: str, uid: int | None, gid: int | None) -> int:
    """An fd appending to ``path``, opened with the job user's own rights; never through a final symlink.

    Missing directories are made as the job user too. As root the shim takes the job user's effective
    ids for the opening only (it is single-threaded then), so a job cannot make gpuq write where it
    could not write itself (a symlink to ``/etc/passwd``, a root-owned directory).
    """
    switch = uid is not None and os.geteuid() == 0
    if uid is not None and switch:
        os.setgroups([])
        os.setegid(gid if gid is not None else uid)
        os.seteuid(uid)
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputRefused(f"{path} is a symbolic link: refused") from exc
        who = "the job user" if switch else "this user"
        raise OutputRefused(f"{who} cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if switch:
            os.seteuid(0)
            os.setegid(0)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputRefused(f"{path} is not a regular file: refused")
    os.set_blocking(fd, True)
    return fd


def _tee(source: int, spool: Any, extra: int) -> None:
    """Copy the job's stream to its log (the spool the agent ships) and to its ``--output`` file, until EOF."""
    while True:
        try:
            chunk = os.read(source, 65536)
        except OSError:
            break
        if not chunk:
            break
        spool.write(chunk)
        spool.flush()
        view = memoryview(chunk)
        while extra >= 0 and view:
            try:
                view = view[os.write(extra, view):]
            except OSError:
                extra = -1  # the file went bad (disk full): the log the service keeps goes on
    os.close(source)


def _outputs(spec: dict[str, Any]) -> tuple[int | None, int | None]:
    """The job user's fds for stdout and stderr (stderr joins --output when --error is not given, as in Slurm)."""
    uid, gid = spec.get("uid"), spec.get("gid")
    out = open_as_job_user(spec["output_file"], uid, gid) if spec.get("output_file") else None
    err = open_as_job_user(spec["error_file"], uid, gid) if spec.get("error_file") else None
    return out, err if err is not None else out


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop(proc: subprocess.Popen, group: JobCgroup | None, grace_s: float) -> None:
    """SIGTERM the job's group, wait ``grace_s``, then SIGKILL every process it has."""
    _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(POLL_S)
    _killpg(proc.pid, signal.SIGKILL)
    if group is not None:
        group.kill()


def main(run_dir: Path) -> int:
    spec = json.loads((run_dir / "spec.json").read_text())
    (run_dir / "shim.pid").write_text(str(os.getpid()))
    group = cgroup_of(spec)
    lease = run_dir / "lease"
    started = time.time()
    try:
        user_out, user_err = _outputs(spec)
    except OutputRefused as exc:
        write_json(run_dir / "exit.json", {"start_error": f"output file: {exc}", "started_at": started,
                                           "ended_at": time.time()})
        return 1
    tees: list[threading.Thread] = []
    try:
        with open(spec["stdout"], "ab") as out, open(spec["stderr"], "ab") as err:
            pipes = {name: os.pipe() for name, fd in (("out", user_out), ("err", user_err)) if fd is not None}
            proc = subprocess.Popen(
                spec["command"], env=spec["env"], cwd=spec.get("cwd"),
                stdout=pipes["out"][1] if "out" in pipes else out, stderr=pipes["err"][1] if "err" in pipes else err,
                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                preexec_fn=_preexec(group.procs_files() if group else [], spec.get("uid"), spec.get("gid")),
            )
            for name, (read_end, write_end) in pipes.items():
                os.close(write_end)
                spool = open(spec["stdout"] if name == "out" else spec["stderr"], "ab")  # noqa: SIM115 - the tee's
                extra = user_out if name == "out" else user_err
                assert extra is not None
                tee = threading.Thread(target=_tee, args=(read_end, spool, extra), daemon=True)
                tee.start()
                tees.append(tee)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        write_json(run_dir / "exit.json", {"start_error": f"cannot run {spec['command'][0]!r}: {reason}",
                                           "started_at": started, "ended_at": time.time()})
        return 1
    (run_dir / "job.pid").write_text(str(proc.pid))

    def forward(signum: int, _frame: object) -> None:
        _killpg(proc.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    fenced = False
    while proc.poll() is None:
        if not fenced and lease_expired(lease):
            fenced = True
            _stop(proc, group, min(float(spec.get("grace_s", 10.0)), FENCE_GRACE_CAP_S))
            break
        time.sleep(POLL_S)
    code = proc.wait()
    # Whatever the job left behind (a setsid daemon) dies with it.
    _killpg(proc.pid, signal.SIGKILL)
    oom_kills = 0
    if group is not None:
        group.kill()
        oom_kills = group.oom_kills()
    for tee in tees:  # every writer is dead now: the pipes are at EOF
        tee.join(timeout=5)
    write_json(run_dir / "exit.json", {
        "exit_code": code if code >= 0 else 128 - code, "oom_kills": oom_kills, "fenced": fenced,
        "started_at": started, "ended_at": time.time(),
    })
    return 0


if __name__ == "__main__":  # pragma: no cover - run by ProcessRuntime as its own process
    sys.exit(main(Path(sys.argv[1])))

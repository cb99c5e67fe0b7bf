"""CUDA MPS: one ``nvidia-cuda-mps-control -d`` daemon per shared GPU or MIG instance, owned by the agent.

Two layers:

* :class:`MpsControl` starts, finds and stops the daemon of one device UUID
  (``GPU-…`` or ``MIG-…``; MPS runs on top of MIG with one daemon per MIG
  device, GPU-FACTS §3), nothing more;
* :class:`MpsDaemons` is the agent's **one MPS owner**, shared by both
  runtimes (process and Docker): it starts a device's daemon once, at the
  first block job placed on it; knows its status (``ready`` /
  ``failed: <reason>``, sent with every heartbeat and shown on
  ``GET /v1/nodes``); restarts a daemon that died (``check``; the agent fails
  the block jobs that ran on it, with that reason); stops it when the device
  leaves shared mode (a whole-device job arrives on it and no block job is
  left: ``stop``) and at agent shutdown (``stop_all``); and retries a failed
  start every ``retry_s``, so a fixed host comes back without a restart.

Layout under ``root`` (one directory per device UUID)::

    <root>/<uuid>/pipe   CUDA_MPS_PIPE_DIRECTORY: the daemon's ``control`` pipe; clients
                         (process jobs, containers) use the same path
    <root>/<uuid>/log    CUDA_MPS_LOG_DIRECTORY: control.log, server.log
    <root>/<uuid>/shm    the daemon's /dev/shm when ``isolate_shm`` (see below)
    <root>/<uuid>/uid    the Unix uid this device's clients run as (``MpsDaemons``)

**MPS and the job user.** MPS runs one server per Unix user at a time: the
control daemon starts a server with the uid of the first client, and a
client of another uid waits until every client of that server has exited
(``nvidia-cuda-mps-control(1)``). Per-attempt uids (``GPUQ_JOB_UIDS``) on one
shared GPU would therefore run one after the other, not side by side. So:

* every block job on one shared device runs as **that device's MPS uid**:
  with per-attempt uids, a uid of its own taken from the top of
  ``GPUQ_JOB_UIDS`` (highest free first; attempts take theirs from the
  bottom, and neither takes one the other holds); with
  ``GPUQ_JOB_USER=name``, that user; an agent that is not root, its own user;
* the device's pipe and log directories belong to that uid, mode 0700:
  the jobs of *another* device (another uid) cannot reach this daemon;
* process block jobs run as that uid (not a per-attempt one), containers of
  block jobs with ``user=<uid>:<gid>``, so process and container tenants of
  one device share its one server;
* the daemon itself runs as the agent (root): only root may start servers for
  another uid.

What that costs: the co-tenants of one shared device share a uid, so they
can signal each other and read each other's files and ``/proc/<pid>/environ``
— on top of what MPS already shares between them (a fatal fault in one
client ends every client of the server). Jobs on different devices, and
every whole-GPU or MIG job, keep their own uids. Block jobs that must not
share a uid should not share a GPU (ask for whole GPUs or a MIG slice).

Invariants:

* a daemon sees exactly one device: it is started with
  ``CUDA_VISIBLE_DEVICES=<uuid>``, so inside it (and for its clients) that
  device is index 0 — hence ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=<n>M"``;
* ``ensure_started`` and ``stop`` are idempotent, safe to call on every launch;
* a daemon is running when its control pipe exists and the pid in its pid file
  (``nvidia-cuda-mps-control.pid`` in the pipe dir) is alive: a daemon killed
  with its pipe left behind counts as dead.

``isolate_shm`` (default True): MPS clients and server exchange data through
``/dev/shm``. Binding the host's ``/dev/shm`` into job containers would hand
every job the host's shared-memory files, so the daemon is started in a
private mount namespace (``unshare --mount``) where ``<root>/<uuid>/shm`` is
bind-mounted over ``/dev/shm``; containers bind that same directory at
``/dev/shm``. This follows the k8s device plugin's recipe (daemon and clients
share one per-daemon shm); that it works for a host daemon is unverified on a
real GPU (GPU-FACTS §3 [U]). With ``isolate_shm=False`` the daemon uses the
host's ``/dev/shm`` and ``MpsDaemon.shm_dir`` says so. Process jobs always
share the host's ``/dev/shm`` with the daemon, so the agent starts daemons
with ``isolate_shm`` only when it has no process runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from workers.runtime.base import LaunchError
from workers.runtime.jobuser import JobUser

__all__ = [
    "READY",
    "ClientUsers",
    "MpsControl",
    "MpsDaemon",
    "MpsDaemons",
    "MpsError",
    "MpsStartError",
    "MpsStopError",
    "MpsUnavailable",
    "binary_missing",
    "default_root",
    "mps_client_env",
    "mps_owner",
    "pid_alive",
]

log = logging.getLogger(__name__)

DEFAULT_BINARY = "nvidia-cuda-mps-control"
READY = "ready"  # a device's MPS status when its daemon runs; else "failed: <reason>"
_CONTROL_PIPE = "control"  # the named pipe the control daemon creates in its pipe dir
_PID_FILE = "nvidia-cuda-mps-control.pid"  # the control daemon's pid, in its pipe dir
REASON_MAX_CHARS = 300


class MpsError(Exception):
    """Base of MPS control failures."""


class MpsStartError(MpsError):
    """The MPS control daemon did not start; the message carries its log tail."""


class MpsStopError(MpsError):
    """The MPS control daemon did not quit when asked."""


class MpsUnavailable(LaunchError):
    """A block job cannot start: its device's MPS daemon is not ready (the node's fault, not the job's).

    The agent reports the attempt lost with this message (the job is requeued
    and waits, never runs without its limits) and the device's status says why.
    """


@dataclass(frozen=True)
class MpsDaemon:
    """Where one device's MPS daemon lives; what clients need to reach it."""

    uuid: str
    pipe_dir: Path
    log_dir: Path
    shm_dir: Path  # the daemon's /dev/shm, to be bound at /dev/shm in clients
    uid: int | None = None  # the Unix user every client must run as (MPS: one server per user); None: any
    gid: int | None = None


def mps_client_env(daemon: MpsDaemon, *, blocks: int, memory_mib: int) -> dict[str, str]:
    """The environment an MPS client needs: pipe dir, SM share in %, pinned memory cap.

    ``blocks`` is the share of the GPU's SMs in percent (1 block = 1 %);
    ``memory_mib`` becomes ``"0=<memory_mib>M"``: device 0 because the
    daemon, and so every client, sees its one device as index 0; ``M``
    because the MPS limit takes a size with a ``K``/``M``/``G`` suffix and
    MiB keeps our unit exact (no rounding to whole GiB).
    """
    if not 1 <= blocks <= 100:
        raise ValueError(f"blocks must be 1..100, got {blocks}")
    if memory_mib <= 0:
        raise ValueError(f"memory_mib must be positive, got {memory_mib}")
    return {
        "CUDA_MPS_PIPE_DIRECTORY": str(daemon.pipe_dir),
        "CUDA_MPS_LOG_DIRECTORY": str(daemon.log_dir),
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(blocks),
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": f"0={memory_mib}M",
    }


def _safe_dir_name(uuid: str) -> str:
    # UUIDs are "GPU-…"/"MIG-…"; older MIG ids contain "/" — keep one path component.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", uuid)


class MpsControl:
    """Starts, finds and stops the per-device MPS control daemons of one node."""

    def __init__(
        self,
        *,
        root: Path = Path("/var/lib/gpuq/mps"),
        binary: str = DEFAULT_BINARY,
        isolate_shm: bool = True,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.root = Path(root)
        self.binary = binary
        self.isolate_shm = isolate_shm
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s

    def daemon(self, uuid: str) -> MpsDaemon:
        """The directories of ``uuid``'s daemon (pure: starts nothing)."""
        base = self.root / _safe_dir_name(uuid)
        shm = base / "shm" if self.isolate_shm else Path("/dev/shm")
        return MpsDaemon(uuid=uuid, pipe_dir=base / "pipe", log_dir=base / "log", shm_dir=shm)

    def daemon_env(self, uuid: str) -> dict[str, str]:
        """The environment the control daemon (and ``quit``) runs with."""
        d = self.daemon(uuid)
        return {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": uuid,
            "CUDA_MPS_PIPE_DIRECTORY": str(d.pipe_dir),
            "CUDA_MPS_LOG_DIRECTORY": str(d.log_dir),
        }

    def is_running(self, uuid: str) -> bool:
        """True when ``uuid``'s daemon has its control pipe up and (if it wrote one) its pid file's process lives."""
        pipe_dir = self.daemon(uuid).pipe_dir
        if not (pipe_dir / _CONTROL_PIPE).exists():
            return False
        try:
            pid = int((pipe_dir / _PID_FILE).read_text().strip())
        except FileNotFoundError:
            return True  # a daemon that keeps no pid file: its pipe is all there is to see
        except (OSError, ValueError):
            return False
        return pid_alive(pid)

    def ensure_started(self, uuid: str) -> MpsDaemon:
        """Start ``uuid``'s daemon unless it runs; return where clients find it."""
        d = self.daemon(uuid)
        if self.is_running(uuid):
            return d
        for path in (d.pipe_dir, d.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.isolate_shm:
            d.shm_dir.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                self._start_argv(d),
                env=self.daemon_env(uuid),
                capture_output=True,
                text=True,
                timeout=self.start_timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise MpsStartError(f"{self.binary} not found: is the NVIDIA driver installed? ({exc})") from None
        except subprocess.TimeoutExpired:
            raise MpsStartError(f"{self.binary} -d for {uuid} did not return in {self.start_timeout_s}s") from None
        if proc.returncode != 0:
            raise MpsStartError(
                f"{self.binary} -d for {uuid} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-500:]}{self._log_tail(d)}"
            )
        # -d forks and returns at once; the control pipe shows up shortly after.
        deadline = time.monotonic() + self.start_timeout_s
        while not self.is_running(uuid):
            if time.monotonic() > deadline:
                raise MpsStartError(
                    f"MPS daemon for {uuid} made no control pipe in {self.start_timeout_s}s{self._log_tail(d)}")
            time.sleep(0.02)
        return d

    def stop(self, uuid: str) -> None:
        """Ask ``uuid``'s daemon to quit (``echo quit | nvidia-cuda-mps-control``); no-op if not running."""
        if not self.is_running(uuid):
            return
        pid = _read_pid(self.daemon(uuid).pipe_dir)
        try:
            proc = subprocess.run(
                [self.binary],
                input="quit\n",
                env=self.daemon_env(uuid),
                capture_output=True,
                text=True,
                timeout=self.stop_timeout_s,
                check=False,
            )
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            raise MpsStopError(f"quit for {uuid}'s MPS daemon failed: {exc}") from None
        if proc.returncode != 0:
            raise MpsStopError(f"quit for {uuid}'s MPS daemon exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        deadline = time.monotonic() + self.stop_timeout_s
        while self.is_running(uuid) or (pid is not None and pid_alive(pid)):
            if time.monotonic() > deadline:
                raise MpsStopError(f"MPS daemon for {uuid} still runs {self.stop_timeout_s}s after quit")
            time.sleep(0.02)

    def log_tail(self, uuid: str) -> str:
        """The last lines of ``uuid``'s control.log ("" if none): why a daemon failed or died."""
        return self._log_tail(self.daemon(uuid))

    def client_env(self, uuid: str, blocks: int, memory_mib: int) -> dict[str, str]:
        """The env a client of ``uuid``'s daemon needs (see :func:`mps_client_env`)."""
        return mps_client_env(self.daemon(uuid), blocks=blocks, memory_mib=memory_mib)

    def _start_argv(self, d: MpsDaemon) -> list[str]:
        if not self.isolate_shm:
            return [self.binary, "-d"]
        # Private mount namespace: the daemon (and the server it forks) see
        # d.shm_dir as /dev/shm; the host's /dev/shm stays out of containers.
        script = 'mount --bind "$1" /dev/shm && exec "$2" -d'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(d.shm_dir), self.binary]

    @staticmethod
    def _log_tail(d: MpsDaemon) -> str:
        log = d.log_dir / "control.log"
        try:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return ""
        return "; control.log: " + " | ".join(tail) if tail else ""


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a daemon of another user counts: EPERM)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _read_pid(pipe_dir: Path) -> int | None:
    try:
        return int((pipe_dir / _PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def default_root(data_dir: Path, *, switching_user: bool) -> Path:
    """Where the agent keeps its MPS daemons' directories (``GPUQ_MPS_DIR`` overrides).

    Clients must reach their daemon's pipe directory, and a job user cannot
    traverse the agent's 0700 data directory: when jobs run as other users the
    root is ``/var/tmp/gpuq-mps/<data dir hash>`` (0711: each uid enters only its
    own device's 0700 directories), else ``<data dir>/mps``.
    """
    configured = os.environ.get("GPUQ_MPS_DIR")
    if configured:
        return Path(configured)
    if not switching_user:
        return data_dir / "mps"
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp/gpuq-mps") / digest


@dataclass(frozen=True)
class ClientUsers:
    """Which Unix user a device's MPS clients run as (see the module docstring).

    ``uids``: per-attempt job uids (``GPUQ_JOB_UIDS``); each device takes its own
    from the top. Else every device's clients are ``uid``/``gid`` (the one job
    user, or the agent's own user when it cannot switch).
    """

    uid: int
    gid: int
    uids: range | None = None


class MpsDaemons:
    """The agent's one MPS owner: a daemon per shared GPU / MIG instance, for every runtime (see the module doc).

    Thread-safe; a device's start and stop run under that device's lock, so
    two block jobs launched at once on one GPU start one daemon.
    """

    def __init__(self, control: MpsControl, *, users: ClientUsers | None = None, retry_s: float = 60.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.control = control
        self.users = users
        self.retry_s = retry_s
        self.on_change = on_change  # called after a status changes (the agent heartbeats early)
        self._lock = threading.Lock()
        self._device_locks: dict[str, threading.Lock] = {}
        self._status: dict[str, str] = {}  # uuid -> READY or "failed: ..."
        self._wanted: set[str] = set()  # daemons this owner started and keeps running
        self._failed_at: dict[str, float] = {}  # uuid -> monotonic time of its last failed start

    @property
    def root(self) -> Path:
        return self.control.root

    # -- what the agent asks ---------------------------------------------------
    def status(self) -> dict[str, str]:
        """Every device this owner knows: ``ready`` or ``failed: <reason>`` (devices never shared: absent)."""
        with self._lock:
            return dict(self._status)

    def ready(self, uuid: str) -> bool:
        with self._lock:
            return self._status.get(uuid) == READY

    def running(self) -> set[str]:
        """The devices whose daemon this owner keeps running."""
        with self._lock:
            return set(self._wanted)

    def uids(self) -> set[int]:
        """The uids devices' clients run as (the process runtime gives none of them to a per-attempt job)."""
        found = set()
        with contextlib.suppress(FileNotFoundError):
            for path in self.root.glob("*/uid"):
                with contextlib.suppress(OSError, ValueError):
                    found.add(int(path.read_text().strip()))
        return found

    def daemon(self, uuid: str) -> MpsDaemon:
        """``uuid``'s daemon directories and client user (pure but for choosing the uid once)."""
        d = self.control.daemon(uuid)
        if self.users is None:
            return d
        uid = self._uid_for(uuid)
        return replace(d, uid=uid, gid=self.users.gid)

    def ensure(self, uuid: str) -> MpsDaemon:
        """``uuid``'s daemon, started if it does not run; ``MpsUnavailable`` with the reason if it cannot start."""
        with self._device_lock(uuid):
            d = self.daemon(uuid)
            if self.control.is_running(uuid):
                with self._lock:
                    self._wanted.add(uuid)
                self._set(uuid, READY)
                return d
            try:
                self._prepare(d)
                self.control.ensure_started(uuid)
            except (MpsError, OSError) as exc:
                reason = _short(str(exc))
                with self._lock:
                    self._failed_at[uuid] = time.monotonic()
                    self._wanted.discard(uuid)
                self._set(uuid, f"failed: {reason}")
                raise MpsUnavailable(f"MPS on {uuid} failed: {reason}") from None
            with self._lock:
                self._wanted.add(uuid)
                self._failed_at.pop(uuid, None)
            self._set(uuid, READY)
            return d

    def stop(self, uuid: str) -> None:
        """Stop ``uuid``'s daemon: the device left shared mode (the caller knows no block job runs on it)."""
        with self._device_lock(uuid):
            with self._lock:
                self._wanted.discard(uuid)
                known = uuid in self._status
            try:
                self.control.stop(uuid)
            except MpsError as exc:
                log.error("stopping the MPS daemon of %s failed: %s", uuid, exc)
            with contextlib.suppress(OSError):
                (self.root / _safe_dir_name(uuid) / "uid").unlink()
            if known:
                with self._lock:
                    self._status.pop(uuid, None)
                    self._failed_at.pop(uuid, None)
                self._changed()

    def stop_all(self, *, keep: Iterable[str] = ()) -> None:
        """Stop every daemon this owner runs but those in ``keep`` (devices whose block jobs go on running)."""
        kept = set(keep)
        for uuid in sorted(self.running() - kept):
            self.stop(uuid)

    def mark_failed(self, uuids: Iterable[str], reason: str) -> None:
        """Record that ``uuids`` cannot have a daemon (e.g. the control binary is missing) without trying."""
        now = time.monotonic()
        for uuid in uuids:
            with self._lock:
                self._failed_at[uuid] = now
            self._set(uuid, f"failed: {_short(reason)}")

    def check(self) -> dict[str, str]:
        """Restart the daemons that died, retry failed starts (every ``retry_s``); ``{uuid: why}`` of the dead.

        The caller fails the block jobs of each dead daemon: their MPS clients
        lost their server.
        """
        died: dict[str, str] = {}
        for uuid in sorted(self.running()):
            if self.control.is_running(uuid):
                continue
            why = f"the MPS daemon of {uuid} died{self.control.log_tail(uuid)}"
            log.error("%s; restarting it", why)
            died[uuid] = _short(why)
            with self._lock:
                self._wanted.discard(uuid)
            with contextlib.suppress(MpsUnavailable):
                self.ensure(uuid)
        now = time.monotonic()
        with self._lock:
            retry = [u for u, at in self._failed_at.items() if now - at >= self.retry_s and u not in died]
        for uuid in retry:
            self._retry(uuid)
        return died

    def _retry(self, uuid: str) -> None:
        """Try a failed device's daemon again: started and stopped, the device has no status (takes blocks again).

        It is not left running: no block job waits on it here (they were lost),
        and the next one starts it like any first block job.
        """
        with self._device_lock(uuid):
            with self._lock:
                if not self._status.get(uuid, "").startswith("failed: "):
                    return  # a block job started it meanwhile
            d = self.daemon(uuid)
            try:
                self._prepare(d)
                self.control.ensure_started(uuid)
                self.control.stop(uuid)
            except (MpsError, OSError) as exc:
                with self._lock:
                    self._failed_at[uuid] = time.monotonic()
                self._set(uuid, f"failed: {_short(str(exc))}")
                return
            with self._lock:
                self._status.pop(uuid, None)
                self._failed_at.pop(uuid, None)
        log.info("the MPS daemon of %s starts again", uuid)
        self._changed()

    # -- internals -------------------------------------------------------------
    def _device_lock(self, uuid: str) -> threading.Lock:
        with self._lock:
            return self._device_locks.setdefault(uuid, threading.Lock())

    def _set(self, uuid: str, status: str) -> None:
        with self._lock:
            changed = self._status.get(uuid) != status
            self._status[uuid] = status
        if changed:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a status listener never breaks a launch
                log.exception("MPS status listener failed")

    def _uid_for(self, uuid: str) -> int:
        """The uid ``uuid``'s clients run as: its recorded one, else (per-attempt uids) the highest free one."""
        assert self.users is not None
        if self.users.uids is None:
            return self.users.uid
        path = self.root / _safe_dir_name(uuid) / "uid"
        with self._lock:
            try:
                return int(path.read_text().strip())
            except (OSError, ValueError):
                pass
            taken = self.uids()
            for uid in reversed(self.users.uids):
                if uid not in taken:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(str(uid))
                    return uid
        raise MpsStartError(f"no free uid left in GPUQ_JOB_UIDS for the MPS clients of {uuid}")

    def _prepare(self, d: MpsDaemon) -> None:
        """The root (ours, 0711), and the device's pipe and log dirs owned by its client uid (0700)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.root.lstat().st_uid != os.geteuid():
            raise MpsStartError(f"{self.root} belongs to uid {self.root.lstat().st_uid}, not to the agent")
        base = d.pipe_dir.parent
        base.mkdir(parents=True, exist_ok=True)
        for path in (d.pipe_dir, d.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        if d.uid is not None and d.uid != os.geteuid():
            os.chmod(self.root, 0o711)
            os.chmod(base, 0o711)
            for path in (d.pipe_dir, d.log_dir):
                os.chown(path, d.uid, d.gid if d.gid is not None else -1)
                os.chmod(path, 0o700)


def mps_owner(data_dir: Path, job_user: JobUser | None, *, isolate_shm: bool) -> MpsDaemons:
    """The agent's one MPS owner for both runtimes, its clients' users following ``job_user`` (module doc).

    ``isolate_shm``: only for a node without a process runtime (host processes
    share the host's ``/dev/shm`` with their server).
    """
    switching = job_user is not None and job_user.switch
    root = default_root(data_dir, switching_user=switching)
    if job_user is not None and job_user.switch:
        users = ClientUsers(job_user.uid, job_user.gid, job_user.uids)
    else:
        users = ClientUsers(os.geteuid(), os.getegid())
    can_unshare = os.geteuid() == 0 and shutil.which("unshare") is not None
    return MpsDaemons(MpsControl(root=root, isolate_shm=isolate_shm and can_unshare), users=users)


def binary_missing(binary: str = DEFAULT_BINARY) -> str:
    """Why ``binary`` cannot be run here ("" when it is on PATH or an executable path)."""
    if os.sep in binary:
        return "" if os.access(binary, os.X_OK) else f"{binary} not found"
    return "" if shutil.which(binary) else f"{binary} not found on PATH (is the NVIDIA driver installed?)"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"

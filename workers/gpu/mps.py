"""CUDA MPS control: one ``nvidia-cuda-mps-control -d`` daemon per GPU or MIG device.

Layout under ``root`` (one directory per device UUID)::

    <root>/<uuid>/pipe   CUDA_MPS_PIPE_DIRECTORY: the daemon's ``control`` pipe; clients
                         (containers) mount it at the same path
    <root>/<uuid>/log    CUDA_MPS_LOG_DIRECTORY: control.log, server.log
    <root>/<uuid>/shm    the daemon's /dev/shm when ``isolate_shm`` (see below)

Invariants:

* a daemon sees exactly one device: it is started with
  ``CUDA_VISIBLE_DEVICES=<uuid>``, so inside it (and for its clients) that
  device is index 0 — hence ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=<n>M"``;
* ``ensure_started`` and ``stop`` are idempotent, safe to call on every launch;
* clients must run as the daemon's user (MPS runs one server per Unix user):
  the agent starts daemons as root and containers run as root (with every
  capability dropped).

``isolate_shm`` (default True): MPS clients and server exchange data through
``/dev/shm``. Binding the host's ``/dev/shm`` into job containers would hand
every job the host's shared-memory files, so the daemon is started in a
private mount namespace (``unshare --mount``) where ``<root>/<uuid>/shm`` is
bind-mounted over ``/dev/shm``; containers bind that same directory at
``/dev/shm``. This follows the k8s device plugin's recipe (daemon and clients
share one per-daemon shm); that it works for a host daemon is unverified on a
real GPU (GPU-FACTS §3 [U]). With ``isolate_shm=False`` the daemon uses the
host's ``/dev/shm`` and ``MpsDaemon.shm_dir`` says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MpsControl",
    "MpsDaemon",
    "MpsError",
    "MpsStartError",
    "MpsStopError",
    "mps_client_env",
]

DEFAULT_BINARY = "nvidia-cuda-mps-control"
_CONTROL_PIPE = "control"  # the named pipe the control daemon creates in its pipe dir


class MpsError(Exception):
    """Base of MPS control failures."""


class MpsStartError(MpsError):
    """The MPS control daemon did not start; the message carries its log tail."""


class MpsStopError(MpsError):
    """The MPS control daemon did not quit when asked."""


@dataclass(frozen=True)
class MpsDaemon:
    """Where one device's MPS daemon lives; what clients need to reach it."""

    uuid: str
    pipe_dir: Path
    log_dir: Path
    shm_dir: Path  # the daemon's /dev/shm, to be bound at /dev/shm in clients


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
        """True when ``uuid``'s daemon has its control pipe up."""
        return (self.daemon(uuid).pipe_dir / _CONTROL_PIPE).exists()

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
        while self.is_running(uuid):
            if time.monotonic() > deadline:
                raise MpsStopError(f"MPS daemon for {uuid} still has its control pipe after {self.stop_timeout_s}s")
            time.sleep(0.02)

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

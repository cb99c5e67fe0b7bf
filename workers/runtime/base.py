"""The runtime protocol: the I/O seam between the agent and what runs jobs.

An agent owns log files and the bookkeeping; a runtime only starts, watches,
stops, lists and cleans up. Handles are strings the runtime understands (a
pid for ``process``, a container id for ``docker``) and must survive an agent
restart where the runtime allows it (``adopt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.messages import LaunchSpec, reserved_env_name
from workers.protocol import ExitReason

__all__ = ["Adopted", "ExitReason", "ExitStatus", "LaunchError", "NodeFault", "Runtime", "RuntimeError_",
           "check_user_env"]


@dataclass(frozen=True)
class ExitStatus:
    """How an attempt ended."""

    exit_code: int | None
    reason: ExitReason
    message: str = ""
    cause: str | None = None  # why the agent (or a shim) stopped it on its own: fence, shutdown, time_limit
    node_fault: bool = False  # the node failed it, not the job (reported as lost; repeated faults drain the node)


@dataclass(frozen=True)
class Adopted:
    """A running attempt found by ``Runtime.adopt`` after an agent restart."""

    job_id: str
    attempt: int
    handle: str
    replica: int = 0


class RuntimeError_(Exception):
    """Base of runtime failures."""


class LaunchError(RuntimeError_):
    """The attempt could not be started; the message says why."""


class NodeFault(RuntimeError_):
    """This node, not the job, could not start the attempt (logs unwritable, cgroup error, engine gone)."""


def check_user_env(env: dict[str, str]) -> None:
    """Refuse a job env that sets a reserved name (``workers.messages.reserved_env_name``).

    The API refuses such a job first; every runtime calls this before it
    starts anything, so a spec that bypassed the API cannot choose its
    devices, its MPS share or its ``GPUQ_*`` identity either.
    """
    for name in env:
        if reserved_env_name(name):
            raise LaunchError(f"env {name} is reserved: gpuq sets devices, MPS shares and GPUQ_* itself")


class Runtime(Protocol):
    """Starts, watches and stops attempts on one node."""

    name: str

    def launch(self, spec: LaunchSpec, *, stdout_path: Path, stderr_path: Path) -> str:
        """Start the attempt and return its handle; raise ``LaunchError`` if it cannot start."""

    def wait(self, handle: str, timeout_s: float | None = None) -> ExitStatus | None:
        """Block up to ``timeout_s`` for the attempt to end; None if still running."""

    def stop(self, handle: str, *, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns once it is gone."""

    def collect_logs(self, handle: str, *, stdout_path: Path, stderr_path: Path) -> None:
        """Bring the attempt's output up to date in the two files (no-op if it writes there itself)."""

    def cleanup(self, handle: str) -> None:
        """Free what is left of the attempt (remove a container); idempotent."""

    def adopt(self, node_name: str) -> list[Adopted]:
        """Attempts of this node still running under this runtime (re-adoption after a restart)."""

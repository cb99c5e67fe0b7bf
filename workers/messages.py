"""Messages between the service and the node agents, and the rules both sides apply to them.

This is the only module of ``workers`` that ``queue_service`` imports. It holds:

- the dramatiq messages (``LaunchSpec``, ``StopRequest``) and the inventory an
  agent registers (``NodeInventory``): plain, JSON-safe dataclasses with
  ``to_dict`` / ``from_dict``;
- the HTTP contract of ``/v1/agent/*`` (request and answer models, ``ExitReason``),
  defined in :mod:`workers.protocol` and re-exported here;
- the reserved environment names (``reserved_env_name``), refused by the API
  and by every runtime.

Every message carries ``job_id`` and ``attempt``; the attempt number is the fencing
token: an agent acts on and reports about exactly one attempt, and the
service refuses reports whose attempt is not the job's current one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from workers.protocol import (
    AdoptAnswer,
    AdoptBody,
    AttemptKey,
    AttemptRef,
    ExitBody,
    ExitedAnswer,
    ExitReason,
    HeartbeatAnswer,
    HeartbeatBody,
    IdleJob,
    KeptAttempt,
    LogBody,
    LogsAnswer,
    RegisterAnswer,
    RegisterBody,
    SampleBody,
    SamplesAnswer,
    SamplesBody,
    StartedAnswer,
)

# The HTTP contract is re-exported: queue_service imports it from here.
__all__ = [
    "LAUNCH_ACTOR",
    "RESERVED_ENV_NAMES",
    "RESERVED_ENV_PREFIXES",
    "RESERVED_ENV_WHY",
    "STOP_ACTOR",
    "AdoptAnswer",
    "AdoptBody",
    "AttemptKey",
    "AttemptRef",
    "ExitBody",
    "ExitReason",
    "ExitedAnswer",
    "GpuInfo",
    "HeartbeatAnswer",
    "HeartbeatBody",
    "IdleJob",
    "KeptAttempt",
    "LaunchSpec",
    "LogBody",
    "LogsAnswer",
    "MigDeviceInfo",
    "NodeInventory",
    "RegisterAnswer",
    "RegisterBody",
    "SampleBody",
    "SamplesAnswer",
    "SamplesBody",
    "StartedAnswer",
    "StopRequest",
    "node_queue_name",
    "reserved_env_name",
]

# dramatiq actor names: the service sends by name, agents declare the actors.
LAUNCH_ACTOR = "gpuq_launch_attempt"
STOP_ACTOR = "gpuq_stop_attempt"


_T = TypeVar("_T")

# Environment names a job may not set, because gpuq sets them from the allocation or because
# they would let a job escape it. One list for the API (it refuses the submission, 422 on
# ``env``) and for both runtimes (they refuse the launch: the last line if the API was bypassed).
#
# - CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES, NVIDIA_* (NVIDIA_VISIBLE_DEVICES,
#   NVIDIA_DRIVER_CAPABILITIES, ...): they choose which devices a process or the NVIDIA
#   container runtime exposes; gpuq sets them to exactly the allocated UUIDs.
# - CUDA_MPS_*: the MPS pipe directory and the active-thread / pinned-memory limits of
#   block jobs; a job setting them would take more of a shared GPU than it was given.
# - GPUQ_*: who the job is and what it holds (``GPUQ_JOB_ID``, ``GPUQ_GPU_UUIDS``, ...),
#   and the agent's own settings (``GPUQ_TOKEN``): never the job's to choose.
# - LD_* (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, LD_DEBUG_OUTPUT, LD_BIND_NOW, ...): the
#   dynamic loader's variables inject, swap or audit libraries (a fake libcuda or
#   libnvidia-ml can lie about devices and limits); every one of them, by prefix.
RESERVED_ENV_NAMES = frozenset({
    "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",
})
RESERVED_ENV_PREFIXES = ("NVIDIA_", "CUDA_MPS_", "GPUQ_", "LD_")
RESERVED_ENV_WHY = "is set by gpuq from the allocation and may not be overridden"


def reserved_env_name(name: str) -> bool:
    """True if a job may not set ``name`` (see ``RESERVED_ENV_NAMES`` / ``RESERVED_ENV_PREFIXES``)."""
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


# -- --output / --error path patterns (Slurm's filename patterns) ----------------------------------------------------

OUTPUT_CODES = {
    "j": "the job id", "A": "the array id (the job id outside an array)", "a": "the array index (0 outside one)",
    "x": "the job name", "u": "the user the job runs as on its node", "N": "the node name", "%": "a literal %",
}
MAX_OUTPUT_PATH_CHARS = 4096


def output_pattern_problem(pattern: str, *, workdir: str | None) -> str | None:
    """Why ``pattern`` is no ``--output`` / ``--error`` pattern (None: it is one); the API and the node check it."""
    if not pattern:
        return "the path is empty"
    if "\x00" in pattern:
        return "NUL bytes are not allowed"
    if len(pattern) > MAX_OUTPUT_PATH_CHARS:
        return f"at most {MAX_OUTPUT_PATH_CHARS} characters"
    if not pattern.startswith("/") and workdir is None:
        return f"{pattern!r} is relative: give an absolute path, or a working directory (--chdir) it is relative to"
    i = 0
    while i < len(pattern):
        if pattern[i] == "%":
            code = pattern[i + 1:i + 2]
            if code not in OUTPUT_CODES:
                known = ", ".join(f"%{c}" for c in OUTPUT_CODES)
                return f"unknown pattern %{code} in {pattern!r} (known: {known})" if code else \
                    f"{pattern!r} ends with a lone % (write %% for a literal one)"
            i += 2
        else:
            i += 1
    if pattern.endswith("/"):
        return f"{pattern!r} names a directory, not a file"
    return None


def expand_output_path(pattern: str, spec: LaunchSpec, *, user: str) -> str:
    """The file ``pattern`` names for ``spec`` on its node (``user``: the job's Unix user); relative to its workdir."""
    values = {
        "j": spec.job_id, "A": spec.array_id or spec.job_id,
        "a": str(spec.array_index if spec.array_index is not None else 0),
        "x": spec.job_name.replace("/", "_"), "u": user, "N": spec.node_name, "%": "%",
    }
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "%" and pattern[i + 1:i + 2] in values:
            out.append(values[pattern[i + 1]])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    path = "".join(out)
    if not path.startswith("/") and spec.workdir:
        path = f"{spec.workdir.rstrip('/')}/{path}"
    return path


def _from(cls: type[_T], data: dict[str, Any]) -> _T:
    """``cls(**data)`` without the keys ``cls`` does not know (a newer sender may add some)."""
    names = cls.__dataclass_fields__.keys()  # type: ignore[attr-defined]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LaunchSpec:
    """Everything an agent needs to start one attempt of one job, and nothing more."""

    job_id: str
    attempt: int
    node_name: str
    command: list[str]
    image: str | None = None  # None: run as a bare process on the host
    env: dict[str, str] = field(default_factory=dict)
    gpu_uuids: list[str] = field(default_factory=list)  # "GPU-…" or "MIG-…" (device order)
    blocks: int | None = None  # MPS share in % of SMs, for block jobs
    gpu_memory_mib: int | None = None  # MPS pinned memory limit, for block jobs
    cpus: float | None = None
    memory_mib: int | None = None
    time_limit_s: int | None = None
    grace_s: float = 10.0
    replica: int = 0  # gang member index (0 for a single job)
    replicas: int = 1  # gang size
    # MIG instances the placement created but the node has not carved yet:
    # [{"index": i in gpu_uuids, "gpu_uuid": parent, "profile": "3g.40gb", "start": 4}]; the agent
    # creates each one and puts its MIG UUID at gpu_uuids[index] before the job starts.
    # An item with "shared": true is a shared instance that block jobs stack on (under one MPS daemon).
    mig_slices: list[dict[str, Any]] = field(default_factory=list)
    # Block job on a shared MIG instance: gpu_uuids[0] is (or, once carved, becomes) the instance's MIG
    # UUID, and ``blocks`` / ``gpu_memory_mib`` are shares of that instance (100 blocks = its SMs), served by
    # the MPS daemon of that MIG UUID. False: blocks of a whole shared GPU.
    mig_shared: bool = False
    # The directory the job starts in (absolute, on the node; in the container for an image job).
    # None: the agent's own per-attempt directory (process) or the image's WORKDIR (Docker).
    workdir: str | None = None
    array_id: str | None = None  # a job array's task: the array (its first task's id) and this task's index
    array_index: int | None = None
    # host directories to mount, each allowed by the job's project at submit (Docker runtime only):
    # [{"host_path": "/data/vision", "container_path": "/data", "read_only": true}]
    volumes: list[dict[str, Any]] = field(default_factory=list)
    # ``--output`` / ``--error`` path patterns (``expand_output_path``): where the node also writes the job's
    # stdout / stderr, opened as the job user; None: only the logs the service keeps. ``job_name`` for ``%x``.
    output: str | None = None
    error: str | None = None
    job_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchSpec:
        return _from(cls, data)


@dataclass(frozen=True)
class StopRequest:
    """Stop one attempt: SIGTERM, ``grace_s`` to exit, then SIGKILL."""

    job_id: str
    attempt: int
    node_name: str
    grace_s: float = 10.0
    reason: str = "cancelled"
    replica: int | None = None  # None: every replica of the attempt on this node

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopRequest:
        return _from(cls, data)


@dataclass(frozen=True)
class MigDeviceInfo:
    """One MIG device (GPU instance + compute instance) as NVML reports it."""

    uuid: str  # "MIG-…"
    profile: str  # profile name, e.g. "3g.40gb"
    profile_id: int  # NVML GPU instance profile id (smi ID), e.g. 9
    start: int  # placement start (memory slice)
    size: int  # placement size (memory slices)
    memory_mib: int
    sm_count: int


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU as a probe (NVML or simulation) reports it."""

    uuid: str  # "GPU-…"
    index: int
    name: str  # NVML's name, e.g. "NVIDIA H100 80GB HBM3"
    model: str  # catalogue key when known (e.g. "h100-80gb"), else the name
    memory_mib: int
    sm_count: int
    mig_enabled: bool = False
    mig_devices: list[MigDeviceInfo] = field(default_factory=list)
    nvlink_peers: list[int] = field(default_factory=list)
    pci_bus_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuInfo:
        mig = [_from(MigDeviceInfo, m) for m in data.get("mig_devices", [])]
        return _from(cls, {**data, "mig_devices": mig})


@dataclass(frozen=True)
class NodeInventory:
    """What an agent registers: the host and its GPUs."""

    node_name: str
    hostname: str
    boot_id: str
    cpus: int
    memory_mib: int
    gpus: list[GpuInfo] = field(default_factory=list)
    gpu_source: str = "none"  # "nvml", "simulated" or "none"
    gpu_note: str = ""  # why there are no GPUs, when there are none
    runtimes: list[str] = field(default_factory=lambda: ["process"])
    limits: str = "env-only"  # "enforced": process jobs' memory, CPU and pids are held by cgroups

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeInventory:
        gpus = [GpuInfo.from_dict(g) for g in data.get("gpus", [])]
        return _from(cls, {**data, "gpus": gpus})


def node_queue_name(node_name: str) -> str:
    """The dramatiq queue a node's agent consumes (dramatiq queue names allow [A-Za-z0-9_.-])."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_name)
    return f"gpuq.node.{safe}"

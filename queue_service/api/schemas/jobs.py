"""Job bodies. Validation here is the edge: nothing malformed gets further."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator, model_validator

from queue_service.api.schemas.common import INT32_MAX, UtcDateTime
from queue_service.services import arrays
from workers.messages import RESERVED_ENV_WHY, output_pattern_problem, reserved_env_name

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A container image reference: [registry[:port]/]path[:tag][@digest].
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# governance (issue 13): a workload class name, and a label key (short identifiers); at most 16 labels
WORKLOAD_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
MAX_LABELS = 16
MAX_LABEL_VALUE_CHARS = 256
MAX_ARGV_BYTES = 128 * 1024  # the whole argv, each argument with its terminating NUL (Linux ARG_MAX is larger)


class ResourcesCreate(BaseModel):
    """What each replica needs: exactly one of ``gpus``, ``mig`` or ``blocks``."""

    model_config = ConfigDict(extra="forbid")

    gpus: Annotated[StrictInt, Field(ge=0, le=16)] | None = None
    mig: str | None = Field(default=None, description="a MIG profile name, e.g. 3g.40gb")
    mig_count: Annotated[StrictInt, Field(ge=1, le=7)] = 1
    blocks: Annotated[StrictInt, Field(ge=1, le=100, description="share of one GPU's SMs, in %")] | None = None
    gpu_memory_mib: Annotated[StrictInt, Field(ge=1, le=INT32_MAX)] | None = None
    gpu_models: list[str] = Field(default_factory=list, max_length=32)
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory_mib: Annotated[StrictInt, Field(ge=1, le=64 * 1024 * 1024)] | None = None
    replicas: Annotated[StrictInt, Field(ge=1, le=64)] = 1

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ResourcesCreate:
        kinds = [k for k in ("gpus", "mig", "blocks") if getattr(self, k) is not None]
        if len(kinds) != 1:
            named = " and ".join(kinds) if kinds else "none"
            raise ValueError(f"give exactly one of gpus, mig or blocks (got {named})")
        if self.blocks is not None and self.gpu_memory_mib is None:
            raise ValueError("blocks needs gpu_memory_mib (the GPU memory the job may pin)")
        if self.blocks is None and self.gpu_memory_mib is not None:
            raise ValueError("gpu_memory_mib goes with blocks only (whole GPUs and MIG slices come with their memory)")
        return self


class VolumeCreate(BaseModel):
    """A host directory mounted into the job's container (only those its project allows; Docker runtime only)."""

    model_config = ConfigDict(extra="forbid")

    host_path: str = Field(min_length=2, max_length=4096, description="absolute directory on the node")
    container_path: str = Field(min_length=2, max_length=4096, description="absolute path inside the container")
    read_only: bool = True

    @field_validator("host_path", "container_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value or ":" in value:
            raise ValueError(f"an absolute path without NUL or ':' is needed, got {value!r}")
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"{value!r}: '.' and '..' are not allowed")
        return value.rstrip("/") or "/"


class DependencyCreate(BaseModel):
    """Wait for ``job_id`` to succeed (``ok``), to fail (``notok``: failed, timed out, cancelled) or to end."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")
    condition: Literal["ok", "notok", "any"] = "ok"


class JobCreate(BaseModel):
    """A job submission."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="job", max_length=128)
    project: str = Field(default="default", max_length=64)
    image: str | None = Field(default=None, max_length=512)
    command: list[Annotated[str, Field(max_length=8192)]] = Field(min_length=1, max_length=4096)
    env: dict[str, Annotated[str, Field(max_length=32768)]] = Field(default_factory=dict, max_length=512)
    resources: ResourcesCreate
    priority_class: str | None = Field(default=None, max_length=32)
    time_limit_s: Annotated[StrictInt, Field(ge=1, le=INT32_MAX)] | None = None
    requeue: bool = Field(default=True, description="if preempted or reclaimed: back to the queue (else cancelled)")
    depends_on: list[DependencyCreate] = Field(
        default_factory=list, max_length=64,
        description="jobs this one waits for; one that can never be met cancels it (Slurm's kill_invalid_depend)")
    array: str | None = Field(default=None, max_length=256,
                              description="a job array, e.g. 0-99%8: tasks 0..99, at most 8 live at once; "
                                          "each task sees GPUQ_ARRAY_INDEX")

    @field_validator("array")
    @classmethod
    def _array(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                arrays.parse(value)
            except arrays.ArraySpecError as exc:
                raise ValueError(str(exc)) from exc
        return value
    workdir: str | None = Field(default=None, max_length=4096,
                                description="absolute directory the job starts in on its node (default: the agent's)")
    # --output / --error (issue 12): where the node also writes stdout / stderr, as the job user (after workdir:
    # a relative pattern needs it)
    output: str | None = Field(default=None, max_length=4096,
                               description="file pattern for the job's stdout on its node: %j job id, %A array id, "
                                           "%a array index, %x name, %u user, %N node, %% a %; relative to workdir")
    error: str | None = Field(default=None, max_length=4096, description="file pattern for its stderr (as output)")

    @field_validator("output", "error")
    @classmethod
    def _output_pattern(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            problem = output_pattern_problem(value, workdir=info.data.get("workdir"))
            if problem is None and info.data.get("image"):
                problem = "written by host-process jobs only (not with an image, yet)"
            if problem is not None:
                raise ValueError(f"{info.field_name}: {problem}")
        return value
    # governance (issue 13): what kind of work this is, and labels a bill can be grouped by
    workload: str | None = Field(default=None, max_length=32,
                                 description="its workload class (training, inference, batch, interactive, "
                                             "experiment, or as configured); default: the service's")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description=f"at most {MAX_LABELS}; keys like 'feature' or 'team.cost-centre'")
    volumes: list[VolumeCreate] = Field(default_factory=list, max_length=16,
                                        description="host directories to mount (the project's allow-list decides)")

    @field_validator("workload")
    @classmethod
    def _workload(cls, value: str | None) -> str | None:
        # Its shape only: which classes exist is configured (the service answers 422 naming workload).
        if value is not None and not WORKLOAD_NAME.match(value):
            raise ValueError(f"{value!r} is not a workload class name (lower-case letters, digits, '_', '-')")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels, got {len(value)}")
        for key, text in value.items():
            if not LABEL_KEY.match(key):
                raise ValueError(f"label key {key!r} is not a short identifier "
                                 "(a lower-case letter, then up to 62 of a-z 0-9 _ . -)")
            if len(text) > MAX_LABEL_VALUE_CHARS:
                raise ValueError(f"label {key!r}: at most {MAX_LABEL_VALUE_CHARS} characters, got {len(text)}")
            if "\x00" in text:
                raise ValueError(f"label {key!r}: NUL bytes are not allowed")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        # Checked on the node too (a missing directory fails the attempt there); here only its shape.
        if value is None:
            return value
        if not value.startswith("/"):
            raise ValueError(f"workdir must be an absolute path, got {value!r}")
        if "\x00" in value:
            raise ValueError("workdir: NUL bytes are not allowed")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("command must be an argv list such as [\"python\", \"train.py\"], not a shell string")
        return value

    @field_validator("command")
    @classmethod
    def _argv_elements(cls, value: list[str]) -> list[str]:
        # execve() cannot pass a NUL inside an argument, and refuses an argv past ARG_MAX: either would
        # be accepted here and then fail every attempt on the node as if the node were at fault.
        for index, arg in enumerate(value):
            if "\x00" in arg:
                raise ValueError(f"command[{index}]: NUL bytes are not allowed in arguments")
        total = sum(len(arg.encode()) + 1 for arg in value)
        if total > MAX_ARGV_BYTES:
            raise ValueError(f"command is {total} bytes; at most {MAX_ARGV_BYTES} (arguments and their NULs)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("name: letters, digits, '.', '_' and '-' only, starting with a letter or digit")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.match(value):
            raise ValueError(f"{value!r} is not a valid image reference")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if reserved_env_name(key):  # one list with the runtimes (workers.messages says why)
                raise ValueError(f"{key} {RESERVED_ENV_WHY}")
            if "\x00" in value[key]:
                raise ValueError(f"{key}: NUL bytes are not allowed in values")
        return value


class AllocationPublic(BaseModel):
    node: str
    replica: int
    kind: str
    gpu_uuid: str | None = None
    blocks: int = 0
    gpu_memory_mib: int = 0
    mig_profile: str | None = None
    mig_start: int | None = None
    cpus_milli: int = 0
    memory_mib: int = 0


class VolumePublic(BaseModel):
    host_path: str
    container_path: str
    read_only: bool = True


class DependencyPublic(BaseModel):
    job_id: str
    condition: str


class ResourcesPublic(BaseModel):
    gpus: int | None = None
    mig: str | None = None
    mig_count: int = 1
    blocks: int | None = None
    gpu_memory_mib: int | None = None
    gpu_models: list[str] = []
    cpus: float | None = None
    memory_mib: int | None = None
    replicas: int = 1


class JobPublic(BaseModel):
    id: str
    name: str
    project: str
    image: str | None
    command: list[str]
    env: dict[str, str]
    resources: ResourcesPublic
    priority_class: str
    priority: int
    priority_override: int | None
    time_limit_s: int | None
    workdir: str | None = None
    output: str | None = None
    error: str | None = None
    held: bool = False
    requeue: bool = True
    preemptions: int = 0
    state: str
    reason: str
    exit_code: int | None
    attempt: int
    submitted_at: UtcDateTime
    admitted_at: UtcDateTime | None
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    stop_cause: str | None = Field(default=None, description="why the job is being stopped, while it stops")
    depends_on: list[DependencyPublic] = []
    array_id: str | None = Field(default=None, description="the array this task belongs to (its first task's id)")
    array_index: int | None = None
    array_limit: int | None = None
    workload: str = "batch"
    labels: dict[str, str] = {}
    volumes: list[VolumePublic] = []
    idle: bool = Field(default=False, description="the job's GPUs sat idle (the idle rule); cleared when busy again")
    idle_since: UtcDateTime | None = None
    allocation: list[AllocationPublic] = []


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next_cursor: str | None = None


class LogsPublic(BaseModel):
    job_id: str
    attempt: int
    stdout: str
    stderr: str
    stdout_offset: int
    stderr_offset: int
    final: bool


class JobsCreate(BaseModel):
    """Many jobs in one request (a job array): validated all together, created all or none."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobCreate] = Field(min_length=1, max_length=1000)


class JobsCreated(BaseModel):
    ids: list[str]
    count: int


class JobEventPublic(BaseModel):
    """One accepted transition of a job, stamped by the database's clock."""

    id: int
    job_id: str
    attempt: int
    at: UtcDateTime
    event: str
    from_state: str | None
    to_state: str
    actor: str
    cause: str | None = None
    reason: str = ""


class JobEventsPublic(BaseModel):
    data: list[JobEventPublic]
    count: int

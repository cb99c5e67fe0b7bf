"""The agent wire contract: every body an agent POSTs to ``/v1/agent/*`` and every answer it reads back.

One set of pydantic models, used on both ends: the service's routes take
the request models as their bodies (so FastAPI validates with exactly these
limits) and the agent's client builds the same models and validates each
answer with the answer models (``Model.model_validate(response.json())``).
A change of shape on one side is then a validation error on the other, not
a silent ``dict.get`` default.

Request bodies keep the limits the routes always had (ids at most 32
characters, node names 128, lists 4096 items, messages 4000 characters).
Answers ignore fields they do not know, so a newer service may add some
without breaking older agents; a missing or mistyped field is an error.

``queue_service`` imports this module only through ``workers.messages``
(the one ``workers`` module it may import); this module imports nothing
from ``workers``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# The database columns' integer types bound every integer a body carries (PostgreSQL refuses more
# with an error, not a 4xx): INTEGER for attempts, replicas, exit codes and sizes, BIGINT for offsets.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
__all__ = [
    "AdoptAnswer",
    "AdoptBody",
    "AttemptKey",
    "AttemptRef",
    "ExitBody",
    "ExitReason",
    "ExitedAnswer",
    "HeartbeatAnswer",
    "HeartbeatBody",
    "IdleJob",
    "KeptAttempt",
    "LogBody",
    "LogsAnswer",
    "RegisterAnswer",
    "RegisterBody",
    "SampleBody",
    "SamplesAnswer",
    "SamplesBody",
    "StartedAnswer",
]


class ExitReason(StrEnum):
    """Why an attempt ended (what an agent reports; a typo must not turn into "failed with code None")."""

    EXITED = "exited"  # the command returned (exit code 0 or not)
    TIMED_OUT = "timed_out"  # time limit reached, stopped by the agent
    STOPPED = "stopped"  # stopped on request (cancel, preemption, reclaim)
    OOM_KILLED = "oom_killed"  # the memory limit was hit
    START_FAILED = "start_failed"  # could not start (bad image, missing binary)
    LOST = "lost"  # the runtime no longer knows it


# -- shared pieces -------------------------------------------------------------


class AttemptKey(BaseModel):
    """One replica of one attempt of one job: the fencing token every report carries."""

    job_id: str = Field(max_length=32)
    attempt: int = Field(ge=1, le=INT32_MAX)
    replica: int = Field(default=0, ge=0, le=INT32_MAX)

    def key(self) -> tuple[str, int, int]:
        """``(job_id, attempt, replica)``, the agent's and the service's dictionary key."""
        return (self.job_id, self.attempt, self.replica)


class AttemptRef(AttemptKey):
    """An attempt as the node holding it names it."""

    node_name: str = Field(max_length=128)


# -- register ----------------------------------------------------------------


class RegisterBody(BaseModel):
    """The node's inventory (``NodeInventory.to_dict()``); the route parses it and names the field if it cannot."""

    inventory: dict[str, Any]


class RegisterAnswer(BaseModel):
    """The lease the agent must keep and how often to heartbeat (self-fencing is derived from them)."""

    node_id: str
    lease_s: float
    heartbeat_s: float


# -- heartbeat ---------------------------------------------------------------


MpsDevice = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MpsStatus = Annotated[str, StringConstraints(pattern=r"^(ready|failed: .+)$", max_length=400)]


class HeartbeatBody(BaseModel):
    """Extend the lease; ``running``: the attempts the agent runs (None: an agent that does not say).

    ``mps``: the MPS status of each GPU / MIG device the agent has run (or tried
    to run) an MPS daemon for, by UUID: ``ready`` or ``failed: <reason>``; a
    device left out has none (never shared, or its daemon stopped). None: an
    agent that runs no MPS (simulated GPUs, an older agent): nothing changes.
    """

    node_name: str = Field(max_length=128)
    running: list[AttemptKey] | None = Field(default=None, max_length=4096)
    mps: dict[MpsDevice, MpsStatus] | None = Field(default=None, max_length=1024)


class HeartbeatAnswer(BaseModel):
    """``known``: False if the service forgot the node (register again); ``stale``: attempts to stop."""

    known: bool
    lease_s: float
    heartbeat_s: float
    stale: list[AttemptKey] = Field(default_factory=list)


# -- adopt -------------------------------------------------------------------


class AdoptBody(BaseModel):
    """After an agent (re)start: the attempts its runtimes still hold."""

    node_name: str = Field(max_length=128)
    attempts: list[AttemptKey] = Field(default_factory=list, max_length=4096)


class KeptAttempt(AttemptKey):
    """An adopted attempt that is still current: supervise it again (``spec``: ``LaunchSpec.to_dict()``)."""

    state: str
    elapsed_s: float = Field(ge=0)  # run time so far, for the time limit
    spec: dict[str, Any]


class AdoptAnswer(BaseModel):
    """Which adopted attempts to keep supervising and which to stop and remove."""

    keep: list[KeptAttempt] = Field(default_factory=list)
    stop: list[AttemptKey] = Field(default_factory=list)
    lease_s: float
    heartbeat_s: float


# -- started / exited / logs ---------------------------------------------------


class StartedAnswer(BaseModel):
    """The start claim was granted (a refusal is a 409); ``state``: the job's state now."""

    state: str


class ExitBody(AttemptRef):
    """How an attempt ended."""

    exit_code: int | None = Field(default=None, ge=-INT32_MAX - 1, le=INT32_MAX)
    reason: ExitReason
    message: str = Field(default="", max_length=4000)
    # Why the agent stopped it, when it did so on its own (the service records it as the StopCause).
    stop_cause: str | None = Field(default=None, pattern=r"^(fence|shutdown|time_limit)$")
    # The node failed the attempt, not the job (logs unwritable, engine down, cgroup error): the attempt
    # is lost (requeued) and repeated node faults drain the node.
    node_fault: bool = False


class ExitedAnswer(BaseModel):
    """The job's state after the report; ``finalized``: the attempt's allocation is released."""

    state: str
    finalized: bool


class LogBody(AttemptRef):
    """One chunk of an attempt's output at byte ``offset`` of its stream."""

    stream: str = Field(pattern=r"^(stdout|stderr)$")
    offset: int = Field(ge=0, le=INT64_MAX)
    data_b64: str


class LogsAnswer(BaseModel):
    """``end``: how many bytes of the stream the service holds (resent chunks are not duplicated)."""

    end: int


# -- samples -------------------------------------------------------------------


class SampleBody(BaseModel):
    """One job's use of one GPU (or MIG device) over ``window_s`` seconds, measured by NVML."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(max_length=32)
    attempt: int = Field(ge=1, le=INT32_MAX)
    replica: int = Field(default=0, ge=0, le=INT32_MAX)
    gpu_uuid: str = Field(max_length=64)
    window_s: float = Field(gt=0, le=3600)
    sm_percent: float | None = Field(default=None, ge=0, le=100)
    memory_used_mib: int = Field(ge=0, le=INT32_MAX)


class SamplesBody(BaseModel):
    """NVML samples from one node's agent."""

    model_config = ConfigDict(extra="forbid")

    node_name: str = Field(max_length=128)
    samples: list[SampleBody] = Field(max_length=4096)


class IdleJob(BaseModel):
    """A job whose GPUs were idle long enough to be flagged; ``reclaimed``: it is being cancelled for it."""

    job_id: str
    attempt: int
    reclaimed: bool


class SamplesAnswer(BaseModel):
    """How many samples were stored, and which of the node's jobs are idle."""

    stored: int
    idle: list[IdleJob] = Field(default_factory=list)

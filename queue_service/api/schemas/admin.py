"""Projects, tokens, nodes and health bodies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from queue_service.api.schemas.common import UtcDateTime
from queue_service.db.models import Role

PROJECT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PROJECT_NAME, description="lower-case letters, digits, '-' and '_'")
    weight: float = Field(default=1.0, gt=0, le=1000)


class ProjectPublic(BaseModel):
    id: str
    name: str
    weight: float
    created_at: UtcDateTime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field(default="", max_length=128)
    projects: list[str] = Field(default_factory=list, max_length=256)
    node_name: str | None = Field(default=None, max_length=128)
    lifetime_s: float | None = Field(default=None, ge=0, le=10 * 365 * 24 * 3600,
                                     description="expires after this long; 0: never; default GPUQ_TOKEN_LIFETIME_S")
    approver: bool = Field(default=False, description="a member token that may approve or deny its projects' "
                                                      "pending jobs")

    @field_validator("projects")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class TokenPublic(BaseModel):
    id: str
    name: str
    role: Role
    projects: list[str]
    node_name: str | None = None
    created_at: UtcDateTime
    expires_at: UtcDateTime | None = None
    last_used_at: UtcDateTime | None = Field(default=None, description="to the minute")
    revoked_at: UtcDateTime | None = None
    approver: bool = False


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once; only its hash is stored")


class HolderPublic(BaseModel):
    """One live allocation on a GPU; ``project`` and ``job_id`` are null for a project the caller may not see."""

    kind: str = Field(description="gpu (whole), mig (an instance) or blocks (a share)")
    blocks: int = 0
    gpu_memory_mib: int = 0
    mig_profile: str | None = None
    mig_start: int | None = None
    project: str | None = Field(default=None, description="null: another project's (drawn as occupied)")
    job_id: str | None = None
    job_name: str | None = None


class MigInstancePublic(BaseModel):
    """One MIG instance of the GPU's layout, as it is: held by a job or free."""

    profile: str
    start: int
    uuid: str | None = None
    memory_mib: int = 0
    held: bool = False
    mode: str = Field(default="exclusive", description="exclusive: one MIG job holds it whole; shared: block jobs "
                      "stack on it under MPS, and 100 blocks = this instance's sm_count SMs (on a 3g.40gb of an "
                      "H100, 100 blocks = its 60 SMs and memory = its 40 GB)")
    sm_count: int = 0
    used_blocks: int = Field(default=0, description="shared: blocks held, of 100 (a share of this instance's SMs)")
    used_memory_mib: int = Field(default=0, description="shared: GPU memory held by block jobs, of memory_mib")
    mps: str | None = Field(default=None, description="its MPS daemon as the agent last said: 'ready', "
                            "'failed: <reason>' (no block job is placed on it), or null (none: never shared)")


class GpuPublic(BaseModel):
    uuid: str
    index: int
    name: str
    model: str
    memory_mib: int
    sm_count: int
    mode: str
    mig_layout: list[dict] = []
    held_whole: bool
    used_blocks: int
    free_blocks: int
    used_memory_mib: int
    free_memory_mib: int
    mps: str | None = Field(default=None, description="its MPS daemon as the agent last said: 'ready', "
                            "'failed: <reason>' (no block job is placed on it), or null (none: never shared)")
    jobs: list[str] = []
    mig_instances: list[MigInstancePublic] = Field(default=[], description="a MIG GPU's instances, free or held")
    holders: list[HolderPublic] = Field(default=[], description="who holds what on it now (blocks by whom)")


class NodePublic(BaseModel):
    id: str
    name: str
    hostname: str
    status: str
    cordoned: bool
    cpus: int
    memory_mib: int
    free_cpus_milli: int
    free_memory_mib: int
    gpu_source: str
    gpu_note: str
    runtimes: list[str] = []
    limits: str = "env-only"  # "enforced": cgroups hold memory, CPU and pids; "env-only": variables only
    drain_reason: str = ""
    schedulable: bool = Field(default=True, description="takes new work (ready, not cordoned, heartbeating)")
    no_work_reason: str = Field(default="", description="why it takes no new work, e.g. 'cordoned'")
    last_heartbeat_at: UtcDateTime | None
    gpus: list[GpuPublic]
    pending_gpus: str = Field(default="", description="a GPU change held until an admin accepts it "
                                                      "(POST /v1/nodes/{name}/accept), e.g. '16 x h100-80gb'")
    pending_since: UtcDateTime | None = None


class HealthPublic(BaseModel):
    status: str
    database: str
    broker: str
    nodes_ready: int
    version: str

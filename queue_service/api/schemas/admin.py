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


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once; only its hash is stored")


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
    jobs: list[str] = []


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
    last_heartbeat_at: UtcDateTime | None
    gpus: list[GpuPublic]


class HealthPublic(BaseModel):
    status: str
    database: str
    broker: str
    nodes_ready: int
    version: str

"""Usage, price and sample bodies (billing)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from queue_service.api.schemas.common import UtcDateTime


class PriceCreate(BaseModel):
    """A new price list for one GPU model (``*``: CPU/RAM prices for nodes without GPUs)."""

    model_config = ConfigDict(extra="forbid")

    gpu_model: str = Field(min_length=1, max_length=64)
    gpu_hour: float = Field(ge=0, le=1e6, description="a whole GPU for an hour")
    block_hour: float | None = Field(default=None, ge=0, le=1e6, description="default: gpu_hour / 100")
    gpu_memory_gib_hour: float | None = Field(default=None, ge=0, le=1e6, description="beside blocks; default 0")
    mig_profile_hour: dict[str, float] = Field(default_factory=dict, max_length=32,
                                               description="profile -> price; default: compute share of gpu_hour")
    cpu_hour: float | None = Field(default=None, ge=0, le=1e6)
    ram_gib_hour: float | None = Field(default=None, ge=0, le=1e6)
    effective_from: datetime | None = Field(default=None, description="default now; never in the past")
    note: str = Field(default="", max_length=1000)


class PricePublic(BaseModel):
    id: int
    gpu_model: str
    effective_from: UtcDateTime
    gpu_hour: float
    block_hour: float | None
    gpu_memory_gib_hour: float | None
    mig_profile_hour: dict[str, float]
    cpu_hour: float | None
    ram_gib_hour: float | None
    created_at: UtcDateTime
    created_by: str
    note: str


class UsageRowPublic(BaseModel):
    """One group's usage; hours are resource-hours (held × time), cost in the catalogue's currency."""

    key: str
    project: str
    gpu_hours: float
    block_hours: float
    mig_hours: float
    gpu_equivalent_hours: float
    gpu_memory_gib_hours: float
    cpu_hours: float
    ram_gib_hours: float
    cost: float
    busy_share: float | None = Field(description="SM-busy GPU-time / sampled GPU-time; null without samples")
    peak_memory_used_mib: int
    allocated_gpu_memory_mib: int
    jobs: int
    workload: str = Field(default="", description="the group's workload class (group_by job or workload)")
    labels: dict[str, str] = Field(default_factory=dict, description="labels the group shares (group_by job: "
                                   "the job's; label:<key>: that key's value)")


class UsagePublic(BaseModel):
    start: UtcDateTime
    end: UtcDateTime
    group_by: str
    projects: list[str]
    rows: list[UsageRowPublic]
    total: UsageRowPublic

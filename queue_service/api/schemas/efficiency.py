"""Measured use fed back: a job's efficiency, allocated vs used per group, fair-share standing."""

from __future__ import annotations

from pydantic import BaseModel, Field

from queue_service.api.schemas.common import UtcDateTime


class JobEfficiencyPublic(BaseModel):
    """What the agents measured of one job against what it was allocated, and what it should ask next time."""

    job_id: str
    measured: bool = Field(description="false: no sample yet (no NVML, simulated GPUs, not started)")
    sampled_s: float = Field(description="replica-seconds covered by samples with an SM figure")
    busy_share: float | None = Field(description="SM-busy GPU time / allocated GPU time; null without SM figures")
    p90_busy_share: float | None = Field(description="the busy share the job stayed at or below 90 % of its run")
    peak_memory_mib: int
    mean_memory_mib: float | None
    allocated_memory_mib: int = Field(description="one replica's GPU memory held (whole GPU, instance or budget)")
    memory_share: float | None = Field(description="peak / allocated GPU memory")
    idle: bool
    idle_since: UtcDateTime | None
    asked: int = Field(description="GPUs or blocks per replica (0: MIG or CPU-only, no hint)")
    unit: str
    hint: str | None = Field(description='e.g. "asked 50 blocks, used at most 12 for 90 % of its run: ask 15"')
    suggest: int | None
    suggest_unit: str | None


class EfficiencyRowPublic(BaseModel):
    """One group's GPU time in GPU-equivalent seconds: held (ledger), covered by samples, SM-busy."""

    key: str
    jobs: int
    allocated_gpu_s: float
    measured_gpu_s: float
    used_gpu_s: float
    busy_share: float | None = Field(description="GPU busy time as a share of allocated (measured) time")
    coverage: float | None = Field(description="measured / allocated: how much of the held time was sampled")


class EfficiencyPublic(BaseModel):
    start: UtcDateTime
    end: UtcDateTime
    group_by: str
    rows: list[EfficiencyRowPublic]
    total: EfficiencyRowPublic = Field(description="every visible project together (cluster-wide for operators)")


class ShareRowPublic(BaseModel):
    """One project's fair-share standing (Slurm sshare: RawShares, NormShares, RawUsage, EffectvUsage, FairShare)."""

    project: str
    weight: float
    norm_share: float
    allocated_gpu_h: float = Field(description="decayed GPU-equivalent hours held")
    used_gpu_h: float = Field(description="decayed GPU-equivalent hours held x measured busy share")
    charged_gpu_h: float = Field(description="what the charge mode counts")
    effective_usage: float = Field(description="charged / every project's charged")
    fair_share: float = Field(description="2^(-effective_usage / norm_share): 1 unused, 0.5 at its share")
    standing: float = Field(description="charged GPU-equivalent seconds per unit of weight (lower runs first)")
    rank: int


class SharePublic(BaseModel):
    charge: str = Field(description="GPUQ_FAIR_SHARE_CHARGE: allocated or used")
    half_life_s: float
    rows: list[ShareRowPublic]

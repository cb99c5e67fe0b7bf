"""Approval bodies: deciding a pending job, approval policies, budgets, capacity requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from queue_service.api.schemas.common import INT32_MAX, UtcDateTime


def _naive_utc(value: datetime) -> datetime:
    """Stored naive UTC; a time without a zone is read as UTC."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


NaiveUtc = Annotated[datetime, AfterValidator(_naive_utc)]


class ApproveCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)
    expires_in_s: int | None = Field(default=None, ge=1, le=INT32_MAX,
                                     description="the approval lapses if the job is not admitted by then "
                                                 "(default: the policy's approval_ttl_s)")


class DenyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="why: the job's final reason")


class PolicyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_gpu_hours: float | None = Field(default=None, ge=0, le=1e9,
                                        description="jobs asking more GPU-equivalents x time-limit hours ask first")
    whole_node: bool = Field(default=False, description="a replica asking for a whole node's GPUs asks first")
    workloads: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=64, description="workload classes whose jobs always ask first")
    self_approval: bool = Field(default=False, description="an approver may decide the jobs they submitted")
    approval_ttl_s: int | None = Field(default=None, ge=1, le=INT32_MAX,
                                       description="an approval lapses if the job is not admitted by then")
    reason: str = Field(default="", max_length=2000)


class PolicyPublic(BaseModel):
    project: str
    max_gpu_hours: float | None
    whole_node: bool
    workloads: list[str]
    self_approval: bool
    approval_ttl_s: int | None


class BudgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: float = Field(ge=0, le=1e12, description="per calendar month (UTC), in unit")
    unit: Literal["gpu_hours", "cost"] = "gpu_hours"
    mode: Literal["hard", "approval"] = "hard"
    reason: str = Field(default="", max_length=2000)


class BudgetPublic(BaseModel):
    project: str
    amount: float | None = Field(description="null: no budget")
    unit: str | None = None
    mode: str | None = None
    month: str | None = None
    used: float | None = Field(default=None, description="this month so far, in unit")
    exhausted: bool = False
    summary: str = ""


class CapacityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    project: str = Field(min_length=1, max_length=64)
    gpus: float = Field(gt=0, le=1e6, description="whole-GPU equivalents on top of the project's guarantee")
    starts_at: NaiveUtc | None = Field(default=None, alias="from", description="default: now")
    ends_at: NaiveUtc = Field(alias="until")
    reason: str = Field(default="", max_length=2000)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class CapacityPublic(BaseModel):
    id: str
    project: str
    gpus: float
    starts_at: UtcDateTime
    ends_at: UtcDateTime
    reason: str
    status: str
    requested_by: str
    created_at: UtcDateTime
    decided_by: str | None
    decided_at: UtcDateTime | None
    decision_reason: str

"""Operator bodies: overrides, reclamation, quotas, priority classes, audit."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from queue_service.api.schemas.common import UtcDateTime


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class PriorityUpdate(Reason):
    """``priority``: an override above or below every class; null clears it."""

    priority: int | None = Field(ge=-1_000_000_000, le=1_000_000_000)


class ReclaimCreate(Reason):
    """Exactly one of job, project, gpu (UUID), node."""

    job: str | None = None
    project: str | None = None
    gpu: str | None = None
    node: str | None = None
    grace_s: float | None = Field(default=None, ge=0, le=24 * 3600,
                                  description="seconds between SIGTERM and SIGKILL; default: each job's class grace")
    requeue: bool = True

    @model_validator(mode="after")
    def _one_target(self) -> ReclaimCreate:
        given = [k for k in ("job", "project", "gpu", "node") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of job, project, gpu or node (got {' and '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("job", "project", "gpu", "node") if getattr(self, k))

    @property
    def target(self) -> str:
        return getattr(self, self.kind)


class ReclaimPublic(BaseModel):
    kind: str
    target: str
    jobs: list[str]
    grace_s: float | None  # None: each job's class grace
    requeue: bool


class QuotaUpdate(Reason):
    guaranteed: float = Field(ge=0, le=1_000_000, description="whole-GPU equivalents guaranteed")
    borrow_limit: float | None = Field(default=None, ge=0, le=1_000_000,
                                       description="how far above the guarantee it may borrow; null: no limit")


class QuotaPublic(BaseModel):
    project: str
    guaranteed: float = Field(description="in force now: the project's own guarantee plus its capacity grants")
    borrow_limit: float | None
    in_use: float
    granted: float = Field(default=0.0, description="of the guarantee, what granted capacity requests add now")
    granted_until: UtcDateTime | None = Field(default=None, description="when the first of those grants ends")


class PriorityClassUpdate(Reason):
    value: int = Field(ge=-1_000_000, le=1_000_000)
    preemptible: bool = False
    grace_s: float = Field(default=30.0, ge=0, le=24 * 3600)
    default_time_limit_s: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                             description="given to jobs of this class that name none")
    max_time_limit_s: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                         description="the most a job of this class may ask")
    allowed_projects: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=1000,
        description="projects whose members may submit in this class (null: every project; []: operators and "
                    "admins only); left out: unchanged")

    @model_validator(mode="after")
    def _default_within_max(self) -> PriorityClassUpdate:
        if (self.default_time_limit_s is not None and self.max_time_limit_s is not None
                and self.default_time_limit_s > self.max_time_limit_s):
            raise ValueError("default_time_limit_s may not exceed max_time_limit_s")
        return self


class PriorityClassPublic(BaseModel):
    name: str
    value: int
    preemptible: bool
    grace_s: float
    default_time_limit_s: int | None = None
    max_time_limit_s: int | None = None
    allowed_projects: list[str] | None = None


class AuditPublic(BaseModel):
    id: int
    at: UtcDateTime
    actor: str
    action: str
    target: str
    reason: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditsPublic(BaseModel):
    data: list[AuditPublic]
    count: int
    next_before_id: int | None = None

"""Governance bodies: workload classes, the coexistence table, a project's image and volume allow-lists."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from queue_service.api.schemas.common import INT32_MAX

CLASS = Annotated[str, Field(min_length=1, max_length=32)]
LIMIT = Annotated[StrictInt, Field(ge=1, le=INT32_MAX)]


class WorkloadClassUpdate(BaseModel):
    """A workload class's defaults (a field left null: the job and its priority class decide)."""

    model_config = ConfigDict(extra="forbid")

    priority_class: str | None = Field(default=None, max_length=32,
                                       description="the priority class of a job that names none")
    preemptible: bool | None = Field(default=None, description="if set, its jobs' priority class must agree")
    default_time_limit_s: LIMIT | None = None
    max_time_limit_s: LIMIT | None = None
    may_share_gpu: bool = Field(default=True, description="false: its GPU holds it alone (blocks, MIG instances)")
    reason: str = Field(default="", max_length=2000)


class WorkloadClassPublic(BaseModel):
    name: str
    priority_class: str | None
    preemptible: bool | None
    default_time_limit_s: int | None
    max_time_limit_s: int | None
    may_share_gpu: bool


class CoexistenceUpdate(BaseModel):
    """Rows of the GPU table, the node table, or both (each replaces that class's row; the others stay):
    class -> the classes it may share with, or ["*"] for any."""

    model_config = ConfigDict(extra="forbid")

    gpu: dict[CLASS, list[CLASS]] | None = Field(default=None, max_length=256)
    node: dict[CLASS, list[CLASS]] | None = Field(default=None, max_length=256)
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> CoexistenceUpdate:
        if self.gpu is None and self.node is None:
            raise ValueError("give gpu, node or both")
        return self


class CoexistencePublic(BaseModel):
    """Which workload classes may share one physical GPU (MPS blocks, MIG instances of it), and one node."""

    gpu: dict[str, list[str]]
    node: dict[str, list[str]]


class AllowedVolume(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host_path: str = Field(min_length=2, max_length=4096, description="a directory; jobs may mount it or below")
    read_only: bool = Field(default=True, description="true: only read-only mounts")

    @field_validator("host_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value or ":" in value or any(
                p in (".", "..") for p in value.split("/")):
            raise ValueError(f"an absolute directory without '.', '..', ':' or NUL, got {value!r}")
        return value.rstrip("/")


class AllowlistsUpdate(BaseModel):
    """A project's allow-lists, both replaced: images null = any image; volumes [] = no host volumes."""

    model_config = ConfigDict(extra="forbid")

    images: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(
        default=None, max_length=256, description="fnmatch patterns, e.g. registry.internal/vision/*")
    volumes: list[AllowedVolume] = Field(default_factory=list, max_length=256)
    reason: str = Field(default="", max_length=2000)


class AllowlistsPublic(BaseModel):
    project: str
    images: list[str] | None
    volumes: list[AllowedVolume]

"""One settings object for the service, the agent and the CLI (``GPUQ_*`` env or flags)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from queue_service.admission.coexistence import DEFAULT_GPU as DEFAULT_COEXISTENCE_GPU
from queue_service.admission.coexistence import DEFAULT_NODE as DEFAULT_COEXISTENCE_NODE
from queue_service.admission.coexistence import check as check_coexistence


class PriorityClass(BaseModel):
    """A named priority: a higher ``value`` runs first."""

    value: int
    preemptible: bool = False
    grace_s: float = 30.0
    default_time_limit_s: int | None = None  # a job that names none gets this (Slurm's DefaultTime)
    max_time_limit_s: int | None = None  # the most a job of this class may ask (MaxTime)
    # Whose members may submit in it: None, every project; a list, only those ([]: operators and admins only).
    allowed_projects: list[str] | None = None


DEFAULT_PRIORITY_CLASSES: dict[str, PriorityClass] = {
    # production preempts others' work: not open to members unless an operator names their project
    "production": PriorityClass(value=1000, preemptible=False, grace_s=60.0, allowed_projects=[]),
    "normal": PriorityClass(value=500, preemptible=False, grace_s=30.0),
    "experiment": PriorityClass(value=100, preemptible=True, grace_s=30.0),
}


# -- workload classes (issue 13): what a job declares it is, and the defaults that come with it --
class WorkloadClass(BaseModel):
    """A declared kind of work. ``None`` leaves the choice to the job and its priority class."""

    priority_class: str | None = None  # a job that names no priority class gets this one
    preemptible: bool | None = None  # if set, the job's priority class must be (or must not be) preemptible
    default_time_limit_s: int | None = None  # before the priority class's default
    max_time_limit_s: int | None = None  # on top of the priority class's maximum
    may_share_gpu: bool = True  # False: its GPU (every block, every MIG instance) holds it alone


DEFAULT_WORKLOAD_CLASSES: dict[str, WorkloadClass] = {
    "training": WorkloadClass(preemptible=False),
    "inference": WorkloadClass(preemptible=False),
    "batch": WorkloadClass(),  # the default: the job's own choices, as before workload classes
    "interactive": WorkloadClass(default_time_limit_s=4 * 3600, max_time_limit_s=24 * 3600),
    "experiment": WorkloadClass(priority_class="experiment", preemptible=True),
}


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "gpuq"


class Settings(BaseSettings):
    """Every knob of gpuq. Environment variables are ``GPUQ_`` + the field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="GPUQ_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="SQLite file, tokens, logs")
    host: str = "127.0.0.1"
    port: int = 8421
    database_url: str | None = Field(default=None, description="default: SQLite in data_dir")
    broker_url: str = Field(default="memory://", description="memory:// (in-process) or redis://host:port/db")
    local_agent: bool | None = Field(default=None, description="run an agent in the server process (default: on with memory://)")
    api_processes: int = Field(default=1, ge=1, le=64, description="processes serving the API on the one port "
                               "(PostgreSQL and Redis only; admission cycles stay one at a time)")
    simulate_gpus: str | None = Field(default=None, description="e.g. h100-80gb:2,a100-40gb:1[:shared]")
    node_name: str | None = None
    runtime: str = Field(default="auto", description="auto (process + Docker if reachable), docker or process")
    priority_classes: dict[str, PriorityClass] = Field(default_factory=lambda: dict(DEFAULT_PRIORITY_CLASSES))
    default_priority_class: str = "normal"
    max_body_bytes: int = 256 * 1024
    max_time_limit_s: int = 30 * 24 * 3600
    default_grace_s: float = 10.0
    admission_interval_s: float = 2.0
    heartbeat_interval_s: float = 5.0
    node_lease_s: float = 30.0
    max_heartbeats_per_s: float = Field(default=50.0, gt=0, description="heartbeats the whole fleet sends at most: "
                                        "above heartbeat_interval_s x this many nodes, intervals and leases grow")
    max_log_bytes: int = 16 * 1024 * 1024
    fair_share_half_life_s: float = Field(default=7 * 24 * 3600.0, gt=0, description="usage half-life for fair share")
    min_run_s: float = Field(default=60.0, ge=0, description="a job is not preempted before it ran this long")
    server_url: str | None = Field(default=None, description="where the CLI and agents find the API")
    token: str | None = Field(default=None, description="API token for the CLI / agent")
    token_lifetime_s: float = Field(default=90 * 24 * 3600.0, ge=0,
                                    description="new tokens expire after this long (0: never); GPUQ_TOKEN_LIFETIME_S")
    tls_cert: Path | None = Field(default=None, description="serve HTTPS with this PEM certificate (and tls_key)")
    tls_key: Path | None = Field(default=None, description="the certificate's PEM private key")
    rate_limit_per_s: float = Field(default=0.0, ge=0, description="requests per second per token, sustained "
                                    "(0: no limit); over it: 429 with Retry-After")
    rate_limit_burst: int = Field(default=200, ge=1, description="requests a token may make at once above the rate")
    metrics_token: str | None = Field(default=None, description="if set, /metrics needs it (or a viewer+ API "
                                      "token) as a bearer token; GPUQ_METRICS_TOKEN")
    metrics_auth: bool = Field(default=False, description="/metrics needs a viewer+ API token (GPUQ_METRICS_AUTH)")
    # figures on the wall (issue 13): label keys /metrics breaks cost down by, bounded (queue_service.metrics)
    metrics_label_keys: str = Field(default="", max_length=1000, description="comma-separated job label keys "
                                    "for gpuq_usage_cost_by_label_total (default none); GPUQ_METRICS_LABEL_KEYS")
    metrics_label_values_max: int = Field(default=20, ge=1, le=1000, description="values per label key shown; "
                                          "the rest are summed as (other)")
    max_gpus_per_node: int = Field(default=16, ge=0, le=1024,
                                   description="an agent reporting more GPUs than this is refused (422)")

    @model_validator(mode="after")
    def _cert_and_key(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        return self

    @field_validator("priority_classes", mode="before")
    @classmethod
    def _parse_classes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)
        return value

    @field_validator("default_priority_class")
    @classmethod
    def _known_default(cls, value: str, info) -> str:
        classes = info.data.get("priority_classes") or DEFAULT_PRIORITY_CLASSES
        if value not in classes:
            raise ValueError(f"default_priority_class {value!r} is not one of {sorted(classes)}")
        return value

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'gpuq.db'}"

    @property
    def scheme(self) -> str:
        """``https`` when a TLS certificate is configured."""
        return "https" if self.tls_cert else "http"

    @property
    def effective_server_url(self) -> str:
        return self.server_url or f"{self.scheme}://{self.host}:{self.port}"

    @property
    def runs_local_agent(self) -> bool:
        if self.local_agent is not None:
            return self.local_agent
        return self.broker_url.startswith("memory://")

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    # -- billing and measured usage (issue 6) --
    sample_interval_s: float = Field(default=30.0, description="how often agents send NVML samples")
    idle_sm_percent: float = Field(default=5.0, description="a job's GPU is idle below this SM %")
    idle_after_s: float = Field(default=1800.0,
                                description="idle this long (every sample below the threshold): flagged")
    idle_reclaim: bool = Field(default=False, description="cancel flagged idle jobs (operators switch it on)")

    # -- governance: measured use fed back (issue 13) --
    fair_share_charge: Literal["allocated", "used"] = Field(
        default="allocated", description="fair share charges what a job held (allocated) or held x busy share (used)")

    # -- webhooks (issue 12) --
    webhook_poll_s: float = Field(default=1.0, gt=0, description="how often new job events are sent to webhooks")
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="how long a receiver may take to answer")
    webhook_backoff_s: float = Field(default=2.0, ge=0, description="first retry after this; doubles each try")
    webhook_max_attempts: int = Field(default=8, ge=1, description="tries before a delivery is marked failed")
    webhook_allowed_hosts: list[str] | None = Field(
        default=None, description="if set, the only hosts webhooks may POST to (an admin's restriction)")

    # -- many hosts: recovery (issue 4) --
    node_fault_drain_count: int = Field(default=2, ge=1, description="launch failures that were the node's own "
                                        "(logs unwritable, engine down, cgroup errors) after which it is drained")
    node_fault_window_s: float = Field(default=120.0, gt=0, description="node faults further apart than this "
                                       "start the count again")
    max_retries: int = Field(default=3, ge=0, description="times a job is requeued after its node or attempt was lost; "
                                                          "then it fails with the reason")
    resend_after_s: float = Field(default=10.0, gt=0,
                                  description="re-send a launch or stop still outstanding after this long")

    # -- the request path and a quiet server (issue 15) --
    auth_cache_s: float = Field(default=1.0, ge=0, le=1.0,
                                description="an accepted token is trusted this long before the database is asked "
                                            "again: revocation, role changes and expiry take effect within it")
    admission_min_gap_s: float = Field(default=0.02, ge=0, le=1.0,
                                       description="the admitter's pause between two cycles, at least (and at "
                                                   "least as long as the last cycle took): wakes coalesce")
    # infrastructure retries (issue 10): a job its node failed to start waits, then prefers other nodes
    node_fault_backoff_s: float = Field(default=5.0, ge=0, description="wait before retrying a job whose node failed "
                                        "its launch; doubled for each further lost attempt")
    node_fault_backoff_max_s: float = Field(default=300.0, ge=0, description="the longest such wait")

    # -- governance: workload classes (issue 13) --
    workload_classes: dict[str, WorkloadClass] = Field(default_factory=lambda: dict(DEFAULT_WORKLOAD_CLASSES),
                                                       description="JSON name -> class; REST rows override")
    default_workload: str = Field(default="batch", description="the workload class of a job that names none")
    # coexistence (queue_service.admission.coexistence): class -> the classes it may share with, or ["*"]
    coexistence_gpu: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_COEXISTENCE_GPU.items()},
        description="JSON: which workload classes may share one physical GPU (MPS blocks, MIG instances)")
    coexistence_node: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_COEXISTENCE_NODE.items()},
        description="JSON: which workload classes may share one node")

    @field_validator("workload_classes", "coexistence_gpu", "coexistence_node", mode="before")
    @classmethod
    def _parse_workloads(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _coexistence_holds(self) -> Settings:
        for field, table in (("coexistence_gpu", self.coexistence_gpu), ("coexistence_node", self.coexistence_node)):
            problem = check_coexistence(table, classes=self.workload_classes, field=field)
            if problem is not None:
                raise ValueError(problem.message)
        if self.default_workload not in self.workload_classes:
            raise ValueError(f"default_workload {self.default_workload!r} is not one of "
                             f"{sorted(self.workload_classes)}")
        return self

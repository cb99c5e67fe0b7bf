"""Tables. Invariants the database itself keeps:

- a project name, a token hash, a node name and a GPU UUID are unique;
- no two *live* allocations (``released_at IS NULL``) hold the same
  exclusive slot of a GPU (a whole GPU or one MIG placement): the partial
  unique index ``uq_allocations_live_slot`` refuses the second one;
- audit rows are only ever inserted (the API has no route that edits them).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from queue_service.db.base import Base, new_id, utcnow
from queue_service.lifecycle.states import FINAL_STATES, LIVE_STATES, AttemptState, JobState, StopCause

__all__ = ["FINAL_STATES", "LIVE_STATES", "AttemptState", "JobState", "StopCause"]  # re-exported for readers


class NodeStatus(StrEnum):
    READY = "ready"
    DRAINING = "draining"
    DOWN = "down"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    MEMBER = "member"
    VIEWER = "viewer"
    AGENT = "agent"


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # governance (revision 0012): image patterns its jobs may run (fnmatch; None: any) and host volumes they may
    # mount ([{"host_path": "/data", "read_only": true}]: that directory and below; read_only: never read-write)
    allowed_images: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    allowed_volumes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default=text("'[]'"))


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    projects: Mapped[list[str]] = mapped_column(JSON, default=list)  # project names, for members
    node_name: Mapped[str | None] = mapped_column(String(128), nullable=True)  # agents may be bound to a node
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # revision 0006: a token past expires_at is refused like a revoked one; last use, at most once a minute
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # revision 0013: a member token that may approve or deny its projects' pending jobs
    approver: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    boot_id: Mapped[str] = mapped_column(String(64), default="")
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=NodeStatus.READY)
    cordoned: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_source: Mapped[str] = mapped_column(String(16), default="none")
    gpu_note: Mapped[str] = mapped_column(Text, default="")
    runtimes: Mapped[list[str]] = mapped_column(JSON, default=list)
    limits: Mapped[str] = mapped_column(String(16), default="env-only")  # "enforced" (cgroups) or "env-only"
    drain_reason: Mapped[str] = mapped_column(Text, default="")  # why the service drained it (launch failures)
    node_faults: Mapped[int] = mapped_column(Integer, default=0)  # launch failures of its own, in the window
    last_node_fault_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    registered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # revision 0006: a registered node's changed GPUs (more, other models), held until an admin accepts them
    pending_gpus: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    pending_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Gpu(Base):
    __tablename__ = "gpus"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(64))
    memory_mib: Mapped[int] = mapped_column(Integer)
    sm_count: Mapped[int] = mapped_column(Integer, default=0)
    mode: Mapped[str] = mapped_column(String(16), default="exclusive")
    mig_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mig_layout: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    nvlink_peers: Mapped[list[int]] = mapped_column(JSON, default=list)
    present: Mapped[bool] = mapped_column(Boolean, default=True)  # False once the node stops reporting it
    # revision 0015: MPS daemon status by device UUID (this GPU's and its MIG instances'): "ready" or
    # "failed: <reason>", as the agent's heartbeat last said; None: none reported (services.nodes.record_mps)
    mps_status: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_order", "state", "submitted_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    owner_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    command: Mapped[list[str]] = mapped_column(JSON)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # resources, one row per job; replicas > 1 is a gang
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    mig_profile: Mapped[str | None] = mapped_column(String(32), nullable=True)
    mig_count: Mapped[int] = mapped_column(Integer, default=1)
    blocks: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    gpu_models: Mapped[list[str]] = mapped_column(JSON, default=list)
    cpus: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    priority_class: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)  # the class's value at submit time
    priority_override: Mapped[int | None] = mapped_column(Integer, nullable=True)
    time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # current attempt number (fencing token)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # arbitration (revision 0004)
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    requeue_on_preempt: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    stop_action: Mapped[str | None] = mapped_column(String(16), nullable=True)  # requeue | cancel, while stopping
    stop_requested_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    stop_grace_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # lifecycle (revision 0005): why the job is stopping, and the words for people; never parsed back
    stop_cause: Mapped[str | None] = mapped_column(String(16), nullable=True)  # a StopCause while stopping
    stop_reason: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    # researcher's path (revision 0009): the directory the job starts in on its node (None: the agent's)
    workdir: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the daily path (revision 0008): dependencies and job arrays
    depends_on: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    array_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)  # its first task's id
    array_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    array_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # most tasks live at once
    # approvals (revision 0013): an approval's end; past it, a job never admitted waits for approval again
    approval_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # governance (revision 0012): the declared workload class, and labels a bill can be grouped by
    workload: Mapped[str] = mapped_column(String(32), default="batch", server_default=text("'batch'"))
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    volumes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    # infrastructure retries (revision 0017): after a launch its node failed, not before this time, and the nodes
    # (ids) that failed it, which placement avoids while another node fits
    retry_not_before: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    avoid_nodes: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    # --output / --error patterns (revision 0017), expanded on the node (workers.messages.expand_output_path)
    output_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # utilization (revision 0014): since when the job's GPUs sat idle (services.idle's rule); None: busy
    idle_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (Index("uq_attempts_job_number", "job_id", "number", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.ADMITTED)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    exits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # replica -> {exit_code, reason}
    launch_sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    stop_sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (
        Index(
            "uq_allocations_live_slot",
            "gpu_uuid",
            "slot",
            unique=True,
            sqlite_where=text("released_at IS NULL AND kind != 'blocks'"),
            postgresql_where=text("released_at IS NULL AND kind != 'blocks'"),
        ),
        Index("ix_allocations_live", "released_at", "node_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    replica: Mapped[int] = mapped_column(Integer, default=0)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    kind: Mapped[str] = mapped_column(String(16))  # gpu | mig | blocks | cpu
    gpu_uuid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slot: Mapped[str] = mapped_column(String(32), default="")
    blocks: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    mig_profile: Mapped[str | None] = mapped_column(String(32), nullable=True)
    mig_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mig_uuid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cpus_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class JobEvent(Base):
    """One accepted transition of a job (append-only): what the history, webhooks and dependencies read."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # 0: no attempt yet
    at: Mapped[datetime] = mapped_column(DateTime)  # the database's clock
    event: Mapped[str] = mapped_column(String(16))  # an Event
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None for submit
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))  # who: a token label, "admitter", "agent:NODE", "service"
    cause: Mapped[str | None] = mapped_column(String(16), nullable=True)  # a StopCause, for stops
    reason: Mapped[str] = mapped_column(Text, default="")


class Webhook(Base):
    """A project's subscription: job events of the chosen kinds are POSTed, signed, to ``url``."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))  # HMAC-SHA256 key, shown once at creation
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # to-states that trigger it; [] = every event
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # only this job's events, if set
    after_event_id: Mapped[int] = mapped_column(Integer, default=0)  # job_events up to here are enqueued
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class WebhookDelivery(Base):
    """One event for one hook: retried with backoff until the receiver answers 2xx or the tries run out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_deliveries_event", "webhook_id", "event_id", unique=True),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(Integer)  # job_events.id: receivers de-duplicate on it
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class LogChunk(Base):
    __tablename__ = "log_chunks"
    __table_args__ = (Index("ix_log_chunks_job", "job_id", "attempt", "stream", "offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(16))  # stdout | stderr (".N" for gang replica N)
    offset: Mapped[int] = mapped_column(BigInteger)  # byte offset of data in the attempt's stream
    data: Mapped[bytes] = mapped_column(LargeBinary)
class ProjectQuota(Base):
    """A project's guaranteed capacity and borrowing limit, in whole-GPU equivalents."""

    __tablename__ = "project_quotas"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    guaranteed: Mapped[float] = mapped_column(Float, default=0.0)
    borrow_limit: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: no limit
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PriorityClassRow(Base):
    """A priority class set by an operator; overrides the configured class of the same name."""

    __tablename__ = "priority_classes"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False)
    grace_s: Mapped[float] = mapped_column(Float, default=30.0)
    default_time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)  # revision 0008
    max_time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    allowed_projects: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # revision 0006; NULL: all
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


from queue_service.db import approval_models, billing_models, governance_models, utilization_models  # noqa: E402,F401

"""Tables of the authority to say no: approval policies, budgets, capacity requests (revision 0013).

- one approval policy and one budget per project (the project's id is the key);
- a capacity request is asked once and decided once (``status``: ``pending`` → ``granted``
  or ``refused``); a granted one is a guarantee for ``[starts_at, ends_at)``
  that ``services.quotas`` adds to the project's own while it lasts, so it
  ends by itself.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from queue_service.db.base import Base, new_id, utcnow


class ApprovalPolicy(Base):
    """Which of a project's jobs wait for an approver (``pending_approval``) instead of queueing."""

    __tablename__ = "approval_policies"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    max_gpu_hours: Mapped[float | None] = mapped_column(Float, nullable=True)  # GPU-equivalents x time limit
    whole_node: Mapped[bool] = mapped_column(Boolean, default=False)  # a replica asking for a whole node
    workloads: Mapped[list[str]] = mapped_column(JSON, default=list)  # workload classes that always ask
    self_approval: Mapped[bool] = mapped_column(Boolean, default=False)  # an approver may approve their own job
    approval_ttl_s: Mapped[int | None] = mapped_column(Integer, nullable=True)  # an approval's life until admitted
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="")


class ProjectBudget(Base):
    """A project's monthly allowance: GPU-hours (whole-GPU equivalents) or cost, ``hard`` or ``approval``."""

    __tablename__ = "project_budgets"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    amount: Mapped[float] = mapped_column(Float)  # per calendar month (UTC)
    unit: Mapped[str] = mapped_column(String(16))  # gpu_hours | cost
    mode: Mapped[str] = mapped_column(String(16))  # hard | approval
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="")


class CapacityRequest(Base):
    """A project asks for more guarantee for a period; an admin grants it (a quota that ends) or refuses."""

    __tablename__ = "capacity_requests"
    __table_args__ = (Index("ix_capacity_requests_live", "status", "ends_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    gpus: Mapped[float] = mapped_column(Float)  # whole-GPU equivalents on top of the project's guarantee
    starts_at: Mapped[datetime] = mapped_column(DateTime)
    ends_at: Mapped[datetime] = mapped_column(DateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | granted | refused
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decision_reason: Mapped[str] = mapped_column(Text, default="")

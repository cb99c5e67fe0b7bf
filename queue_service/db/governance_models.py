"""Governance tables (revision 0012): workload classes and coexistence rules set over the API.

Each overrides the configured value of the same name (``Settings.workload_classes``,
``Settings.coexistence_gpu`` / ``coexistence_node``); every change is audited.
The per-project allow-lists live on ``projects`` and a job's volumes on ``jobs``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from queue_service.db.base import Base, utcnow


class WorkloadClassRow(Base):
    """A workload class set by an admin; overrides the configured class of the same name."""

    __tablename__ = "workload_classes"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    priority_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    preemptible: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    default_time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    may_share_gpu: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CoexistenceRow(Base):
    """The coexistence table set by an admin (one row per scope, ``gpu`` or ``node``): class -> its peers."""

    __tablename__ = "coexistence_rules"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    table: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

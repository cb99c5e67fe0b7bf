"""approvals: approval policies, budgets, capacity requests, a job's approval expiry, approver tokens

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_policies",
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("max_gpu_hours", sa.Float(), nullable=True),
        sa.Column("whole_node", sa.Boolean(), nullable=False),
        sa.Column("workloads", sa.JSON(), nullable=False),
        sa.Column("self_approval", sa.Boolean(), nullable=False),
        sa.Column("approval_ttl_s", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "project_budgets",
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "capacity_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_capacity_requests_project_id", "capacity_requests", ["project_id"])
    op.create_index("ix_capacity_requests_live", "capacity_requests", ["status", "ends_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("approval_expires_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("approver", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("approver")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("approval_expires_at")
    op.drop_index("ix_capacity_requests_live", "capacity_requests")
    op.drop_index("ix_capacity_requests_project_id", "capacity_requests")
    op.drop_table("capacity_requests")
    op.drop_table("project_budgets")
    op.drop_table("approval_policies")

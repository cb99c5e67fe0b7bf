"""arbitration: holds, preemption bookkeeping, project quotas, priority classes

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("held", sa.Boolean(), server_default=sa.text("false"), nullable=False))
        batch.add_column(sa.Column("requeue_on_preempt", sa.Boolean(), server_default=sa.text("true"), nullable=False))
        batch.add_column(sa.Column("stop_action", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("stop_requested_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("stop_grace_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("preemptions", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.create_table(
        "project_quotas",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("guaranteed", sa.Float(), nullable=False),
        sa.Column("borrow_limit", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_project_quotas_project_id_projects"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_project_quotas")),
    )
    op.create_table(
        "priority_classes",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("preemptible", sa.Boolean(), nullable=False),
        sa.Column("grace_s", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_priority_classes")),
    )


def downgrade() -> None:
    op.drop_table("priority_classes")
    op.drop_table("project_quotas")
    with op.batch_alter_table("jobs") as batch:
        for column in ("preemptions", "stop_grace_s", "stop_requested_at", "stop_action", "requeue_on_preempt", "held"):
            batch.drop_column(column)

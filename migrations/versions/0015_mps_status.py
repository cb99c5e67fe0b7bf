"""mps status: each GPU's (and its MIG instances') MPS daemon status as its agent last reported it

``gpus.mps_status``: ``{device uuid: "ready" | "failed: <reason>"}`` for the GPU's own UUID and
its MIG instances' UUIDs; NULL: the agent reported none (never shared, simulated GPUs, an older
agent). The admitter places no block job on a device whose status is ``failed: …``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gpus") as batch:
        batch.add_column(sa.Column("mps_status", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gpus") as batch:
        batch.drop_column("mps_status")

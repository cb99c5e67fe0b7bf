"""billing: usage ledger, effective-dated GPU prices, measured GPU samples

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gpu_prices',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('gpu_model', sa.String(length=64), nullable=False),
    sa.Column('effective_from', sa.DateTime(), nullable=False),
    sa.Column('gpu_hour', sa.Float(), nullable=False),
    sa.Column('block_hour', sa.Float(), nullable=True),
    sa.Column('gpu_memory_gib_hour', sa.Float(), nullable=True),
    sa.Column('mig_profile_hour', sa.JSON(), nullable=False),
    sa.Column('cpu_hour', sa.Float(), nullable=True),
    sa.Column('ram_gib_hour', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpu_prices'))
    )
    with op.batch_alter_table('gpu_prices', schema=None) as batch_op:
        batch_op.create_index('ix_gpu_prices_model_from', ['gpu_model', 'effective_from'], unique=False)

    op.create_table('gpu_samples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('replica', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('node_id', sa.String(length=32), nullable=False),
    sa.Column('gpu_uuid', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('window_s', sa.Float(), nullable=False),
    sa.Column('sm_percent', sa.Float(), nullable=True),
    sa.Column('memory_used_mib', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpu_samples'))
    )
    with op.batch_alter_table('gpu_samples', schema=None) as batch_op:
        batch_op.create_index('ix_gpu_samples_at', ['at'], unique=False)
        batch_op.create_index('ix_gpu_samples_job', ['job_id', 'at'], unique=False)

    op.create_table('usage_intervals',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('allocation_id', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('replica', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('project_name', sa.String(length=64), nullable=False),
    sa.Column('owner_token_id', sa.String(length=32), nullable=True),
    sa.Column('node_id', sa.String(length=32), nullable=False),
    sa.Column('node_name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('gpu_uuid', sa.String(length=64), nullable=True),
    sa.Column('gpu_model', sa.String(length=64), nullable=True),
    sa.Column('slot', sa.String(length=32), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('blocks', sa.Integer(), nullable=False),
    sa.Column('gpu_memory_mib', sa.Integer(), nullable=False),
    sa.Column('mig_profile', sa.String(length=32), nullable=True),
    sa.Column('mig_start', sa.Integer(), nullable=True),
    sa.Column('mig_compute_share', sa.Float(), nullable=False),
    sa.Column('cpus_milli', sa.Integer(), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_intervals'))
    )
    with op.batch_alter_table('usage_intervals', schema=None) as batch_op:
        batch_op.create_index('ix_usage_intervals_job', ['job_id', 'attempt'], unique=False)
        batch_op.create_index('ix_usage_intervals_open', ['ended_at', 'gpu_uuid'], unique=False)
        batch_op.create_index('ix_usage_intervals_project_time', ['project_id', 'started_at'], unique=False)
        batch_op.create_index('uq_usage_intervals_allocation', ['allocation_id'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('usage_intervals', schema=None) as batch_op:
        batch_op.drop_index('uq_usage_intervals_allocation')
        batch_op.drop_index('ix_usage_intervals_project_time')
        batch_op.drop_index('ix_usage_intervals_open')
        batch_op.drop_index('ix_usage_intervals_job')

    op.drop_table('usage_intervals')
    with op.batch_alter_table('gpu_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_gpu_samples_job')
        batch_op.drop_index('ix_gpu_samples_at')

    op.drop_table('gpu_samples')
    with op.batch_alter_table('gpu_prices', schema=None) as batch_op:
        batch_op.drop_index('ix_gpu_prices_model_from')

    op.drop_table('gpu_prices')

"""trust: token expiry and last use, classes per project, held GPU changes, an append-only audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

- ``api_tokens.expires_at`` / ``last_used_at``: a token past ``expires_at``
  is refused (401) like a revoked one; ``last_used_at`` is written at most
  once a minute per token.
- ``priority_classes.allowed_projects``: the projects whose members may
  submit in the class (NULL: every project).
- ``nodes.pending_gpus`` / ``pending_since``: a registered node's changed
  GPU inventory, held until an admin accepts it.
- triggers on ``audit_log`` refuse UPDATE and DELETE, on PostgreSQL and on
  SQLite: append-only is the database's rule, not only the API's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

AUDIT_REFUSAL = "audit_log is append-only"

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION gpuq_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{AUDIT_REFUSAL}' USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("priority_classes") as batch:
        batch.add_column(sa.Column("allowed_projects", sa.JSON(), nullable=True))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("pending_gpus", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pending_since", sa.DateTime(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION gpuq_audit_append_only()")
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION gpuq_audit_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                       f"BEGIN SELECT RAISE(ABORT, '{AUDIT_REFUSAL}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS gpuq_audit_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("pending_since")
        batch.drop_column("pending_gpus")
    with op.batch_alter_table("priority_classes") as batch:
        batch.drop_column("allowed_projects")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")

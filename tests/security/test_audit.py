"""The audit log is append-only by the database's rule (triggers on PostgreSQL and SQLite), and the changes
that matter are in it: cancels, tokens, prices."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from queue_service.db.models import AuditEntry
from queue_service.services import audit
from tests.api.helpers import auth, submit


def _rows(ctx, action: str) -> list[AuditEntry]:
    with ctx.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def test_the_database_refuses_to_change_or_delete_audit_rows(ctx) -> None:
    with ctx.sessions() as session, session.begin():
        entry = audit.record(session, actor="test", action="probe", target="t", reason="original")
        session.flush()
        entry_id = entry.id
    for statement in (
        update(AuditEntry).where(AuditEntry.id == entry_id).values(reason="rewritten"),
        delete(AuditEntry).where(AuditEntry.id == entry_id),
        text("UPDATE audit_log SET actor = 'someone else'"),
        text("DELETE FROM audit_log"),
    ):
        with ctx.sessions() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                session.execute(statement)
                session.commit()
            session.rollback()
    if ctx.engine.dialect.name == "postgresql":
        with ctx.sessions() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                session.execute(text("TRUNCATE audit_log"))
                session.commit()
            session.rollback()
    [row] = _rows(ctx, "probe")
    assert (row.id, row.reason, row.actor) == (entry_id, "original", "test")
    # Appending still works.
    with ctx.sessions() as session, session.begin():
        audit.record(session, actor="test", action="probe", target="t2")
    assert len(_rows(ctx, "probe")) == 2


def test_cancels_tokens_and_prices_are_audited(api, ctx, actors) -> None:
    job = submit(api, actors.member_a, project="alpha")
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.member_a)).status_code == 200
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.member_a)).status_code == 200  # no-op
    [cancel] = _rows(ctx, "job.cancel")
    assert (cancel.target, cancel.actor) == (job["id"], "member:member_a")
    assert cancel.before["state"] == "queued" and cancel.after["state"] == "cancelled"

    made = api.post("/v1/tokens", json={"role": "viewer", "name": "dash"}, headers=auth(actors.admin)).json()
    assert api.delete(f"/v1/tokens/{made['id']}", headers=auth(actors.admin)).status_code == 200
    assert [r.target for r in _rows(ctx, "token.create") if r.after["name"] == "dash"] == [made["id"]]
    [revoked] = _rows(ctx, "token.revoke")
    assert (revoked.target, revoked.actor) == (made["id"], "admin:admin")
    assert made["token"] not in str([(r.before, r.after) for r in _rows(ctx, "token.create")])

    response = api.post("/v1/prices", json={"gpu_model": "h100-80gb", "gpu_hour": 3.0}, headers=auth(actors.admin))
    assert response.status_code in (200, 201), response.text
    [price] = _rows(ctx, "price.set")
    assert price.actor == "admin:admin" and "h100-80gb" in price.target

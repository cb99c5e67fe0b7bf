"""API tokens: create (shown once), authenticate, list, revoke.

A token is refused (401) once revoked or past ``expires_at``. Authentication
runs on every request, so ``last_used_at`` is written at most once per
``LAST_USED_EVERY_S`` per token (a read-only UPDATE guarded by the old value:
two replicas racing write it once).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from queue_service.auth import Principal, hash_token, new_token
from queue_service.db.base import utcnow
from queue_service.db.models import ApiToken, Project, Role
from queue_service.errors import InvalidRequest, NotFound, Unauthenticated
from queue_service.services import audit

LAST_USED_EVERY_S = 60.0


def create(
    session: Session,
    *,
    role: Role,
    name: str = "",
    projects: list[str] | None = None,
    node_name: str | None = None,
    actor: Principal | str,
    lifetime_s: float | None = None,
    approver: bool = False,
) -> tuple[ApiToken, str]:
    """Make a token; returns the row and the plain token (never stored). ``lifetime_s`` 0 or None: no expiry."""
    projects = sorted(set(projects or []))
    if role is Role.MEMBER and not projects:
        raise InvalidRequest("a member token needs at least one project", field="projects")
    if role is not Role.MEMBER and projects:
        raise InvalidRequest("only member tokens are bound to projects", field="projects")
    if role is not Role.AGENT and node_name:
        raise InvalidRequest("only agent tokens are bound to a node", field="node_name")
    if approver and role is not Role.MEMBER:
        raise InvalidRequest("only member tokens are approvers (admins approve anyway)", field="approver")
    if role is Role.AGENT and not node_name:
        raise InvalidRequest("an agent token speaks for one node: give its node_name", field="node_name")
    known = set(session.scalars(select(Project.name).where(Project.name.in_(projects))).all())
    unknown = [p for p in projects if p not in known]
    if unknown:
        raise InvalidRequest(f"unknown project(s): {', '.join(unknown)}", field="projects")
    plain = new_token()
    expires_at = utcnow() + timedelta(seconds=lifetime_s) if lifetime_s else None
    row = ApiToken(name=name, role=role.value, token_hash=hash_token(plain), projects=projects, node_name=node_name,
                   expires_at=expires_at, approver=approver)
    session.add(row)
    session.flush()
    audit.record(
        session, actor=actor, action="token.create", target=row.id,
        after={"role": role.value, "name": name, "projects": projects, "node_name": node_name,
               "expires_at": expires_at.isoformat() if expires_at else None, "approver": approver},
    )
    return row, plain


def authenticate(session: Session, *, token: str | None, now: datetime | None = None) -> Principal:
    """The caller behind ``token``; Unauthenticated if missing, unknown, revoked or expired."""
    if not token:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    row = session.execute(select(*_PRINCIPAL_COLUMNS).where(ApiToken.token_hash == hash_token(token))).first()
    return _accepted(row, now or utcnow())


_PRINCIPAL_COLUMNS = (ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.projects, ApiToken.node_name,
                      ApiToken.last_used_at, ApiToken.approver, ApiToken.revoked_at, ApiToken.expires_at,
                      ApiToken.token_hash)  # what ``_accepted`` reads of a row


def _accepted(row: Any, now: datetime) -> Principal:  # a row of _PRINCIPAL_COLUMNS (or an ApiToken), or None
    """The one rule of which token rows are accepted, and the principal of one that is."""
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked token")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated("token expired (gpuq admin token rotate, or create a new one)")
    return Principal(
        token_id=row.id, name=row.name, role=Role(row.role), projects=frozenset(row.projects or []),
        node_name=row.node_name, last_used_at=row.last_used_at, approver=bool(row.approver),
    )


def authenticate_hashes(session: Session, *, hashes: Iterable[str],
                        now: datetime | None = None) -> dict[str, Principal]:
    """The accepted ones of these token hashes, in one query (a cache revalidating what it holds); the others
    (unknown, revoked, expired) are left out."""
    now = now or utcnow()
    accepted: dict[str, Principal] = {}
    # columns, not ORM objects: a cache revalidates every agent's token each second (1,000 rows at 1,000
    # hosts), and building the objects was 11 % of the server's time in the scale bench
    for row in session.execute(select(*_PRINCIPAL_COLUMNS).where(ApiToken.token_hash.in_(list(hashes)))):
        try:
            accepted[row.token_hash] = _accepted(row, now)
        except Unauthenticated:
            continue
    return accepted


def touch(sessions: sessionmaker[Session], *, principal: Principal, now: datetime | None = None) -> None:
    """Record a use, at most once per ``LAST_USED_EVERY_S``: nothing is written while the last use is recent."""
    touch_many(sessions, principals=[principal], now=now)


def touch_many(sessions: sessionmaker[Session], *, principals: Iterable[Principal],
               now: datetime | None = None) -> None:
    """:func:`touch` for several tokens in one UPDATE (those whose last use is recent are left alone)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=LAST_USED_EVERY_S)
    token_ids = [p.token_id for p in principals if p.last_used_at is None or p.last_used_at < cutoff]
    if not token_ids:
        return
    with sessions() as session, session.begin():
        session.execute(
            update(ApiToken).where(ApiToken.id.in_(token_ids))
            .where((ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < cutoff))
            .values(last_used_at=now)
        )


def list_all(session: Session) -> list[ApiToken]:
    """Every token, newest first (hashes stay inside)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id)))


def revoke(session: Session, *, token_id: str, actor: Principal | str, reason: str = "") -> ApiToken:
    """Revoke a token (refused from its next request); revoking twice keeps the first time. Audited."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, actor=actor, action="token.revoke", target=row.id, reason=reason,
                     before={"role": row.role, "name": row.name}, after={"revoked_at": row.revoked_at.isoformat()})
    return row

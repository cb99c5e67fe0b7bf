"""API tokens: create (shown once), authenticate."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal, hash_token, new_token
from queue_service.db.models import ApiToken, Project, Role
from queue_service.errors import InvalidRequest, Unauthenticated
from queue_service.services import audit


def create(
    session: Session,
    *,
    role: Role,
    name: str = "",
    projects: list[str] | None = None,
    node_name: str | None = None,
    actor: Principal | str,
) -> tuple[ApiToken, str]:
    """Make a token; returns the row and the plain token (never stored)."""
    projects = sorted(set(projects or []))
    if role is Role.MEMBER and not projects:
        raise InvalidRequest("a member token needs at least one project", field="projects")
    if role is not Role.MEMBER and projects:
        raise InvalidRequest("only member tokens are bound to projects", field="projects")
    if role is not Role.AGENT and node_name:
        raise InvalidRequest("only agent tokens are bound to a node", field="node_name")
    known = set(session.scalars(select(Project.name).where(Project.name.in_(projects))).all())
    unknown = [p for p in projects if p not in known]
    if unknown:
        raise InvalidRequest(f"unknown project(s): {', '.join(unknown)}", field="projects")
    plain = new_token()
    row = ApiToken(name=name, role=role.value, token_hash=hash_token(plain), projects=projects, node_name=node_name)
    session.add(row)
    session.flush()
    audit.record(
        session, actor=actor, action="token.create", target=row.id,
        after={"role": role.value, "name": name, "projects": projects},
    )
    return row, plain


def authenticate(session: Session, *, token: str | None) -> Principal:
    if not token:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked token")
    return Principal(
        token_id=row.id, name=row.name, role=Role(row.role), projects=frozenset(row.projects or []),
        node_name=row.node_name,
    )

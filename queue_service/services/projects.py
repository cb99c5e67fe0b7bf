"""Projects: the unit of ownership, quota and billing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.models import Project
from queue_service.errors import Conflict, InvalidRequest
from queue_service.services import audit


def get_by_name(session: Session, *, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def require(session: Session, *, name: str) -> Project:
    project = get_by_name(session, name=name)
    if project is None:
        raise InvalidRequest(f"unknown project {name!r}", field="project")
    return project


def create(session: Session, *, name: str, weight: float = 1.0, actor: Principal | str) -> Project:
    if get_by_name(session, name=name) is not None:
        raise Conflict(f"project {name!r} exists already", field="name")
    project = Project(name=name, weight=weight)
    session.add(project)
    session.flush()
    audit.record(session, actor=actor, action="project.create", target=name, after={"name": name, "weight": weight})
    return project


def ensure(session: Session, *, name: str) -> Project:
    """Create the project if it is missing (used for the embedded ``default`` project)."""
    return get_by_name(session, name=name) or create(session, name=name, actor="system")


def visible(session: Session, *, principal: Principal) -> list[Project]:
    projects = session.scalars(select(Project).order_by(Project.name)).all()
    return [p for p in projects if principal.can_see_project(p.name)]

"""/v1/projects, /v1/tokens, /v1/nodes, /v1/health."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import text

from queue_service import __version__
from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.presenters import nodes_public
from queue_service.api.schemas.admin import (
    HealthPublic,
    NodePublic,
    ProjectCreate,
    ProjectPublic,
    TokenCreate,
    TokenCreated,
)
from queue_service.db.models import NodeStatus, Role
from queue_service.services import nodes as node_service
from queue_service.services import projects as project_service
from queue_service.services import tokens as token_service

router = APIRouter()


@router.post("/projects", status_code=status.HTTP_201_CREATED, response_model=ProjectPublic, tags=["projects"])
def create_project(body: ProjectCreate, principal: CurrentPrincipal, session: SessionDep) -> ProjectPublic:
    """Admins create projects."""
    principal.require(Role.ADMIN)
    project = project_service.create(session, name=body.name, weight=body.weight, actor=principal)
    return ProjectPublic.model_validate(project, from_attributes=True)


@router.get("/projects", response_model=list[ProjectPublic], tags=["projects"])
def list_projects(principal: CurrentPrincipal, session: SessionDep) -> list[ProjectPublic]:
    """Every project for admins, operators and viewers; a member's own projects otherwise."""
    return [ProjectPublic.model_validate(p, from_attributes=True)
            for p in project_service.visible(session, principal=principal)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated, tags=["tokens"])
def create_token(body: TokenCreate, principal: CurrentPrincipal, session: SessionDep) -> TokenCreated:
    """Admins make tokens; the plain token is in ``token``, shown this once."""
    principal.require(Role.ADMIN)
    row, plain = token_service.create(
        session, role=body.role, name=body.name, projects=body.projects, node_name=body.node_name, actor=principal
    )
    return TokenCreated(id=row.id, name=row.name, role=Role(row.role), projects=row.projects,
                        created_at=row.created_at, token=plain)


@router.get("/nodes", response_model=list[NodePublic], tags=["nodes"])
def list_nodes(principal: CurrentPrincipal, session: SessionDep) -> list[NodePublic]:
    """Nodes, their GPUs and what is free on each."""
    return nodes_public(session, principal=principal)


@router.get("/health", response_model=HealthPublic, tags=["health"])
def health(ctx: ContextDep, session: SessionDep) -> HealthPublic:
    """Liveness without a token: database reachable, broker kind, ready nodes."""
    session.execute(text("SELECT 1"))
    ready = sum(1 for n, _ in node_service.list_nodes(session) if n.status == NodeStatus.READY)
    broker = ctx.settings.broker_url.split("://", 1)[0]
    return HealthPublic(status="ok", database=ctx.engine.dialect.name, broker=broker, nodes_ready=ready,
                        version=__version__)

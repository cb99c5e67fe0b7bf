"""/v1/projects, /v1/tokens, /v1/nodes, /v1/health."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import text

from partitioner.types import BLOCKS_PER_GPU
from queue_service import __version__
from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.schemas.admin import (
    GpuPublic,
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
    usage = node_service.usage(session)
    out = []
    for node, gpus in node_service.list_nodes(session):
        used = usage.get(node.id, node_service.NodeUsage())
        gpu_out = []
        for g in gpus:
            u = used.gpus.get(g.uuid, node_service.GpuUsage())
            used_memory = g.memory_mib if u.held_whole else u.used_memory_mib
            gpu_out.append(GpuPublic(
                uuid=g.uuid, index=g.index, name=g.name, model=g.model, memory_mib=g.memory_mib,
                sm_count=g.sm_count, mode=g.mode, mig_layout=g.mig_layout or [], held_whole=u.held_whole,
                used_blocks=u.used_blocks, free_blocks=BLOCKS_PER_GPU - u.used_blocks,
                used_memory_mib=used_memory, free_memory_mib=g.memory_mib - used_memory,
                jobs=sorted(u.jobs) if principal.sees_all_projects else [],
            ))
        out.append(NodePublic(
            id=node.id, name=node.name, hostname=node.hostname, status=node.status, cordoned=node.cordoned,
            cpus=node.cpus, memory_mib=node.memory_mib, free_cpus_milli=node.cpus * 1000 - used.cpus_milli,
            free_memory_mib=node.memory_mib - used.memory_mib, gpu_source=node.gpu_source, gpu_note=node.gpu_note,
            last_heartbeat_at=node.last_heartbeat_at, gpus=gpu_out,
        ))
    return out


@router.get("/health", response_model=HealthPublic, tags=["health"])
def health(ctx: ContextDep, session: SessionDep) -> HealthPublic:
    """Liveness without a token: database reachable, broker kind, ready nodes."""
    session.execute(text("SELECT 1"))
    ready = sum(1 for n, _ in node_service.list_nodes(session) if n.status == NodeStatus.READY)
    broker = ctx.settings.broker_url.split("://", 1)[0]
    return HealthPublic(status="ok", database=ctx.engine.dialect.name, broker=broker, nodes_ready=ready,
                        version=__version__)

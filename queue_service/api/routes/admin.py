"""/v1/projects, /v1/tokens, /v1/nodes, /v1/health."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response, status
from sqlalchemy import func, select, text
from starlette.concurrency import run_in_threadpool

from queue_service import __version__
from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep, principal_cache
from queue_service.api.presenters import nodes_public
from queue_service.api.schemas.admin import (
    HealthPublic,
    NodePublic,
    ProjectCreate,
    ProjectPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)
from queue_service.api.schemas.operator import Reason
from queue_service.context import ServiceContext
from queue_service.db.models import ApiToken, Node, NodeStatus, Role
from queue_service.db.session import reading
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
def create_token(body: TokenCreate, principal: CurrentPrincipal, session: SessionDep,
                 ctx: ContextDep) -> TokenCreated:
    """Admins make tokens; the plain token is in ``token``, shown this once."""
    principal.require(Role.ADMIN)
    row, plain = token_service.create(
        session, role=body.role, name=body.name, projects=body.projects, node_name=body.node_name, actor=principal,
        lifetime_s=body.lifetime_s if body.lifetime_s is not None else ctx.settings.token_lifetime_s,
        approver=body.approver,
    )
    return TokenCreated(**_token(row).model_dump(), token=plain)


def _token(row: ApiToken) -> TokenPublic:
    return TokenPublic.model_validate(row, from_attributes=True)


@router.get("/tokens", response_model=list[TokenPublic], tags=["tokens"])
def list_tokens(principal: CurrentPrincipal, session: SessionDep) -> list[TokenPublic]:
    """Every token (never its secret): role, binding, expiry, last use, revocation. Admins only."""
    principal.require(Role.ADMIN)
    return [_token(r) for r in token_service.list_all(session)]


@router.get("/tokens/me", response_model=TokenPublic, tags=["tokens"])
def my_token(principal: CurrentPrincipal, session: SessionDep) -> TokenPublic:
    """The caller's own token (any role): when it expires, what it is bound to."""
    row = session.get(ApiToken, principal.token_id)
    assert row is not None  # it just authenticated
    return _token(row)


@router.delete("/tokens/{token_id}", response_model=TokenPublic, tags=["tokens"])
def revoke_token(token_id: Annotated[str, Path(max_length=32)], principal: CurrentPrincipal,
                 session: SessionDep, request: Request) -> TokenPublic:
    """Revoke a token: refused (401) from its next request. Audited; revoking twice is harmless."""
    principal.require(Role.ADMIN)
    revoked = _token(token_service.revoke(session, token_id=token_id, actor=principal))
    # This server forgets every accepted token at once (other replicas within GPUQ_AUTH_CACHE_S).
    principal_cache(request).clear()
    return revoked


@router.get("/nodes", response_model=list[NodePublic], tags=["nodes"])
def list_nodes(principal: CurrentPrincipal, session: SessionDep) -> list[NodePublic]:
    """Nodes, their GPUs and what is free on each."""
    return nodes_public(session, principal=principal)


@router.post("/nodes/{name}/accept", response_model=NodePublic, tags=["nodes"])
def accept_node(name: Annotated[str, Path(max_length=128)], principal: CurrentPrincipal, session: SessionDep,
                body: Annotated[Reason | None, Body()] = None) -> NodePublic:
    """Accept a node's held GPU change (more GPUs, new ones, other models): they become schedulable. Audited.

    409 when nothing is held. A node's first registration needs no acceptance:
    the admin who made its node-bound agent token accepted the host.
    """
    principal.require(Role.ADMIN)
    node_service.accept(session, name=name, actor=principal, reason=body.reason if body else "")
    [public] = [n for n in nodes_public(session, principal=principal) if n.name == name]
    return public


HEALTH_FRESH_S = 1.0  # /v1/health asks the database at most this often; between, it answers from memory

# Its own router, included first (``create_app``): routes are matched in order, one by one, and a load balancer's
# poll should not walk every other route to find this one.
health_router = APIRouter()


def _health_now(ctx: ServiceContext) -> HealthPublic:
    with reading(ctx.sessions) as session:
        session.execute(text("SELECT 1"))
        ready = session.scalar(select(func.count()).select_from(Node).where(Node.status == NodeStatus.READY)) or 0
    broker = ctx.settings.broker_url.split("://", 1)[0]
    return HealthPublic(status="ok", database=ctx.engine.dialect.name, broker=broker, nodes_ready=ready,
                        version=__version__)


class _HealthCache:
    """The last answer, rendered once: (when it was read, its JSON body); one refresh at a time."""

    def __init__(self) -> None:
        self.read_at = float("-inf")
        self.body = b""
        self.refreshing = False


@health_router.get("/health", response_model=HealthPublic, tags=["health"])
async def health(request: Request) -> Response:
    """Liveness without a token: database reachable, broker kind, ready nodes (read at most once a second).

    Load balancers and monitors poll it: it runs in the event loop and asks
    the database once per ``HEALTH_FRESH_S``, so polling costs no thread and
    no transaction; the answer's JSON is rendered once per read, not per poll.
    While one poll refreshes it, the others answer the previous reading.
    """
    state = request.app.state
    cache: _HealthCache | None = getattr(state, "health", None)
    if cache is None:
        cache = state.health = _HealthCache()
    if time.monotonic() - cache.read_at >= HEALTH_FRESH_S and not (cache.refreshing and cache.body):
        cache.refreshing = True
        try:
            public = await run_in_threadpool(_health_now, state.ctx)
        finally:
            cache.refreshing = False
        cache.body, cache.read_at = public.model_dump_json().encode(), time.monotonic()
    return Response(cache.body, media_type="application/json")

"""Governance routes: workload classes, the coexistence table, project allow-lists (admins change them,
audited; anyone signed in reads the classes and rules, a project's members and operators its lists)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from queue_service.api.deps import ContextDep, CurrentPrincipal, SessionDep
from queue_service.api.schemas.workloads import (
    AllowedVolume,
    AllowlistsPublic,
    AllowlistsUpdate,
    CoexistencePublic,
    CoexistenceUpdate,
    WorkloadClassPublic,
    WorkloadClassUpdate,
)
from queue_service.db.models import Project, Role
from queue_service.errors import NotFound
from queue_service.services import allowlists
from queue_service.services import classes as class_service
from queue_service.services import coexistence as coexistence_service
from queue_service.services import projects as project_service
from queue_service.services import workloads as workload_service
from queue_service.settings import WorkloadClass

router = APIRouter(tags=["governance"])
CLASS_NAME = r"^[a-z][a-z0-9_-]{0,31}$"  # as a job names it (api.schemas.jobs.WORKLOAD_NAME)


@router.get("/workload-classes", response_model=list[WorkloadClassPublic])
def list_workloads(principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> list[WorkloadClassPublic]:
    """The workload classes a job may declare, with the defaults each brings."""
    classes = workload_service.effective(session, settings=ctx.settings)
    return [WorkloadClassPublic(name=n, **c.model_dump()) for n, c in sorted(classes.items())]


@router.put("/workload-classes/{name}", response_model=WorkloadClassPublic)
def put_workload(name: Annotated[str, Path(pattern=CLASS_NAME)], body: WorkloadClassUpdate,
                 principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> WorkloadClassPublic:
    """Create or change a workload class (admins; audited)."""
    principal.require(Role.ADMIN)
    klass = WorkloadClass(**body.model_dump(exclude={"reason"}))
    workload_service.put(session, name=name, klass=klass, settings=ctx.settings, actor=principal,
                         priority_classes=class_service.effective(session, settings=ctx.settings), reason=body.reason)
    return WorkloadClassPublic(name=name, **klass.model_dump())


@router.get("/coexistence", response_model=CoexistencePublic)
def get_coexistence(principal: CurrentPrincipal, session: SessionDep, ctx: ContextDep) -> CoexistencePublic:
    """Which workload classes may share one physical GPU, and one node (a row ["*"]: any class)."""
    return CoexistencePublic(**coexistence_service.tables(session, settings=ctx.settings))


@router.put("/coexistence", response_model=CoexistencePublic)
def put_coexistence(body: CoexistenceUpdate, principal: CurrentPrincipal, session: SessionDep,
                    ctx: ContextDep) -> CoexistencePublic:
    """Replace rows of the GPU and/or node table (admins; audited); a table that then contradicts itself:
    422 naming the row."""
    principal.require(Role.ADMIN)
    after = coexistence_service.put(session, gpu=body.gpu, node=body.node, settings=ctx.settings, actor=principal,
                                    reason=body.reason)
    return CoexistencePublic(**after)


def _public(project: Project) -> AllowlistsPublic:
    return AllowlistsPublic(project=project.name, images=project.allowed_images,
                            volumes=[AllowedVolume(**v) for v in project.allowed_volumes or []])


@router.get("/projects/{name}/allowlists", response_model=AllowlistsPublic, tags=["projects"])
def get_allowlists(name: str, principal: CurrentPrincipal, session: SessionDep) -> AllowlistsPublic:
    """The images a project's jobs may run and the host volumes they may mount."""
    if not principal.can_see_project(name):
        raise NotFound(f"project {name!r} not found")
    return _public(project_service.require(session, name=name))


@router.put("/projects/{name}/allowlists", response_model=AllowlistsPublic, tags=["projects"])
def put_allowlists(name: str, body: AllowlistsUpdate, principal: CurrentPrincipal,
                   session: SessionDep) -> AllowlistsPublic:
    """Replace a project's allow-lists (admins; audited). Jobs already queued keep what they asked."""
    principal.require(Role.ADMIN)
    project = project_service.require(session, name=name)
    allowlists.put(session, project=project, images=body.images, volumes=[v.model_dump() for v in body.volumes],
                   actor=principal, reason=body.reason)
    return _public(project)

"""Typed dependencies: the service context, a transaction, the calling principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.context import ServiceContext
from queue_service.db.session import transaction
from queue_service.services import tokens


def get_context(request: Request) -> ServiceContext:
    return request.app.state.ctx


ContextDep = Annotated[ServiceContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises.

    Routes never commit by hand. ``scope="function"`` commits before the
    response is sent (a client that reads right after sees its write), and
    the lifecycle's effects (launches, stops, waking the admitter) go out
    from the commit hook (``lifecycle.effects``), never from a route.
    """
    with transaction(ctx.sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(request: Request, ctx: ContextDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    # Authentication reads in its own short session so a 401 never holds a write lock.
    with ctx.sessions() as session:
        principal = tokens.authenticate(session, token=token.strip() or None)
    tokens.touch(ctx.sessions, principal=principal)  # at most one UPDATE a minute per token
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]

"""Token checks are cached for at most ``GPUQ_AUTH_CACHE_S`` (1 s): revocation and role changes still take effect.

The cache's clock is the test's: within the window a changed token may still
pass (that is the documented cost of the cache), one window later it never does.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import update

from queue_service.api.deps import PrincipalCache
from queue_service.context import ServiceContext
from queue_service.db.models import ApiToken, Role
from queue_service.services import tokens
from tests.conftest import Actors

JOB = {"command": ["true"], "resources": {"gpus": 0}, "project": "alpha"}


def _clocked(api: TestClient, ctx: ServiceContext) -> list[float]:
    now = [1000.0]
    api.app.state.principals = PrincipalCache(ctx.settings.auth_cache_s, clock=lambda: now[0])  # type: ignore[attr-defined]
    return now


def test_revoked_token_refused_once_the_cache_window_passed(api: TestClient, ctx: ServiceContext,
                                                            actors: Actors) -> None:
    assert ctx.settings.auth_cache_s <= 1.0
    now = _clocked(api, ctx)
    headers = Actors.headers(actors.member_a)
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    with ctx.sessions() as session, session.begin():
        principal = tokens.authenticate(session, token=actors.member_a)
        tokens.revoke(session, token_id=principal.token_id, actor="test")
    now[0] += ctx.settings.auth_cache_s
    answer = api.get("/v1/jobs", headers=headers)
    assert answer.status_code == 401, answer.text
    now[0] += 10.0
    assert api.get("/v1/jobs", headers=headers).status_code == 401  # refusals are never cached as accepted


def test_role_change_takes_effect_within_the_cache_window(api: TestClient, ctx: ServiceContext,
                                                          actors: Actors) -> None:
    now = _clocked(api, ctx)
    headers = Actors.headers(actors.member_a)
    assert api.post("/v1/jobs", headers=headers, json=JOB).status_code == 201
    with ctx.sessions() as session, session.begin():
        session.execute(update(ApiToken).where(ApiToken.token_hash == tokens.hash_token(actors.member_a))
                        .values(role=Role.VIEWER.value, projects=[]))
    now[0] += ctx.settings.auth_cache_s
    answer = api.post("/v1/jobs", headers=headers, json=JOB)
    assert answer.status_code == 403, answer.text


def test_cached_principal_is_reused_within_the_window(api: TestClient, ctx: ServiceContext, actors: Actors) -> None:
    """Inside the window no database lookup happens: a revoked token still passes (the documented bound)."""
    now = _clocked(api, ctx)
    headers = Actors.headers(actors.viewer)
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    with ctx.sessions() as session, session.begin():
        tokens.revoke(session, token_id=tokens.authenticate(session, token=actors.viewer).token_id, actor="test")
    now[0] += ctx.settings.auth_cache_s / 2
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    now[0] += ctx.settings.auth_cache_s / 2
    assert api.get("/v1/jobs", headers=headers).status_code == 401

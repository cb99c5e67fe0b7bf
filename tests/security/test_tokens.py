"""Token lifecycle: expiry, last use, list, revoke; revoked and expired tokens are 401 on the next request."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from queue_service.context import ServiceContext
from queue_service.db.base import utcnow
from queue_service.db.models import ApiToken
from tests.api.helpers import auth
from tests.conftest import Actors


def _make(api: TestClient, admin: str, **body) -> dict:
    made = api.post("/v1/tokens", json={"role": "viewer", "name": "v"} | body, headers=auth(admin))
    assert made.status_code == 201, made.text
    return made.json()


def test_revoked_and_expired_tokens_are_refused_and_both_changes_are_audited(
        api: TestClient, actors: Actors, ctx: ServiceContext) -> None:
    made = _make(api, actors.admin)
    assert made["expires_at"] is not None  # GPUQ_TOKEN_LIFETIME_S: 90 days by default
    assert api.get("/v1/jobs", headers=auth(made["token"])).status_code == 200
    listed = {t["id"]: t for t in api.get("/v1/tokens", headers=auth(actors.admin)).json()}
    assert listed[made["id"]]["last_used_at"] is not None
    assert "token" not in listed[made["id"]] and "token_hash" not in listed[made["id"]]
    assert api.delete(f"/v1/tokens/{made['id']}", headers=auth(actors.viewer)).status_code == 403
    revoked = api.delete(f"/v1/tokens/{made['id']}", headers=auth(actors.admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = api.get("/v1/jobs", headers=auth(made["token"]))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"

    other = _make(api, actors.admin, name="short")
    with ctx.sessions() as session, session.begin():
        session.execute(update(ApiToken).where(ApiToken.id == other["id"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = api.get("/v1/jobs", headers=auth(other["token"]))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    actions = [(e["action"], e["target"]) for e in api.get("/v1/audit", headers=auth(actors.admin)).json()["data"]]
    assert ("token.create", made["id"]) in actions and ("token.revoke", made["id"]) in actions
    assert api.delete("/v1/tokens/nope", headers=auth(actors.admin)).status_code == 404


def test_a_lifetime_of_zero_never_expires_and_last_use_is_written_at_most_once_a_minute(
        api: TestClient, actors: Actors, ctx: ServiceContext) -> None:
    made = _make(api, actors.admin, lifetime_s=0)
    assert made["expires_at"] is None
    api.get("/v1/jobs", headers=auth(made["token"]))
    me = api.get("/v1/tokens/me", headers=auth(made["token"])).json()
    first = me["last_used_at"]
    assert first is not None and me["id"] == made["id"]
    api.get("/v1/jobs", headers=auth(made["token"]))
    assert api.get("/v1/tokens/me", headers=auth(made["token"])).json()["last_used_at"] == first

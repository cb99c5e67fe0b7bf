"""/v1/projects, /v1/tokens, /v1/nodes, /v1/health and the OpenAPI description."""

from __future__ import annotations

from fastapi.routing import APIRoute
from sqlalchemy import select

from queue_service.db.models import ApiToken
from tests import builders
from tests.api.helpers import auth, gpus_of, submit


def test_projects(api, actors) -> None:
    made = api.post("/v1/projects", json={"name": "gamma", "weight": 2.5}, headers=auth(actors.admin))
    assert made.status_code == 201, made.text
    assert made.json()["name"] == "gamma" and made.json()["weight"] == 2.5 and made.json()["id"]

    for who in ("operator", "viewer", "member_a", "agent"):
        response = api.post("/v1/projects", json={"name": f"by-{who}"}, headers=auth(getattr(actors, who)))
        assert response.status_code == 403, (who, response.text)
    assert api.post("/v1/projects", json={"name": "nobody"}).status_code == 401

    duplicate = api.post("/v1/projects", json={"name": "gamma"}, headers=auth(actors.admin))
    assert duplicate.status_code == 409, duplicate.text
    assert "gamma" in duplicate.json()["detail"]

    for body, field in (({"name": "Bad Name"}, "name"), ({"name": "-lead"}, "name"), ({"name": ""}, "name"),
                        ({"name": "x" * 64}, "name"), ({"name": "ok", "weight": 0}, "weight"),
                        ({"name": "ok", "quota": 1}, "quota"), ({}, "name")):
        response = api.post("/v1/projects", json=body, headers=auth(actors.admin))
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["detail"], (body, response.json())

    def names(token: str) -> list[str]:
        response = api.get("/v1/projects", headers=auth(token))
        assert response.status_code == 200, response.text
        return [p["name"] for p in response.json()]

    everything = ["alpha", "beta", "default", "gamma"]
    assert names(actors.admin) == names(actors.operator) == names(actors.viewer) == everything
    assert names(actors.member_a) == ["alpha"]
    assert names(actors.member_b) == ["beta"]
    # A project made here can be submitted to.
    submit(api, actors.admin, project="gamma")


def test_tokens(api, ctx, actors) -> None:
    made = api.post("/v1/tokens", json={"role": "member", "name": "carol", "projects": ["beta", "alpha", "beta"]},
                    headers=auth(actors.admin))
    assert made.status_code == 201, made.text
    answer = made.json()
    token = answer["token"]
    assert token.startswith("gpuq_") and len(token) > 30
    assert answer["role"] == "member" and answer["projects"] == ["alpha", "beta"] and answer["name"] == "carol"

    # The new token works, with its role and projects.
    assert api.get("/v1/jobs", headers=auth(token)).status_code == 200
    submit(api, token, project="beta")
    assert api.post("/v1/jobs", json=builders.job_body(project="default"), headers=auth(token)).status_code == 403
    assert api.post("/v1/tokens", json={"role": "admin"}, headers=auth(token)).status_code == 403

    # Only admins make tokens.
    for who in ("operator", "viewer", "member_a", "agent"):
        response = api.post("/v1/tokens", json={"role": "viewer"}, headers=auth(getattr(actors, who)))
        assert response.status_code == 403, (who, response.text)
    assert api.post("/v1/tokens", json={"role": "viewer"}).status_code == 401

    for body, field in (
        ({"role": "member"}, "projects"),
        ({"role": "member", "projects": []}, "projects"),
        ({"role": "member", "projects": ["alpha", "nope"]}, "projects"),
        ({"role": "viewer", "projects": ["alpha"]}, "projects"),
        ({"role": "superuser"}, "role"),
        ({"role": "viewer", "expires": "never"}, "expires"),
    ):
        response = api.post("/v1/tokens", json=body, headers=auth(actors.admin))
        assert response.status_code == 422, (body, response.text)
        answer = response.json()
        assert field in answer["detail"] or answer.get("field") == field, (body, answer)

    # The plain token is shown once and never stored: only its hash is.
    with ctx.sessions() as session:
        rows = session.scalars(select(ApiToken)).all()
        assert len(rows) == 7  # the six fixture tokens and carol's
        for row in rows:
            stored = " ".join(str(getattr(row, c.key)) for c in ApiToken.__table__.columns)
            for plain in (token, actors.admin, actors.agent, actors.member_a):
                assert plain not in stored
        [carol] = [r for r in rows if r.name == "carol"]
        assert len(carol.token_hash) == 64 and carol.token_hash != token


def test_nodes_show_free_capacity_that_follows_allocations(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "a100-40gb:2", cpus=16, memory_mib=65536)
    [node] = api.get("/v1/nodes", headers=auth(actors.member_a)).json()
    assert (node["name"], node["status"], node["cpus"], node["memory_mib"]) == ("n1", "ready", 16, 65536)
    assert (node["free_cpus_milli"], node["free_memory_mib"]) == (16000, 65536)
    assert node["gpu_source"] == "simulated"
    memory = node["gpus"][0]["memory_mib"]
    for gpu in node["gpus"]:
        assert gpu["model"] == "a100-40gb" and gpu["uuid"].startswith("GPU-")
        free = (gpu["free_blocks"], gpu["used_blocks"], gpu["free_memory_mib"], gpu["held_whole"])
        assert free == (100, 0, memory, False)

    shared = submit(api, actors.member_a, project="alpha",
                    resources={"blocks": 30, "gpu_memory_mib": 1000, "cpus": 2, "memory_mib": 4096})
    ctx.admitter.run_once()
    gpus = gpus_of(api, actors.admin, "n1")
    [used] = [g for g in gpus if g["used_blocks"]]
    assert (used["used_blocks"], used["free_blocks"]) == (30, 70)
    assert (used["used_memory_mib"], used["free_memory_mib"]) == (1000, memory - 1000)
    assert used["jobs"] == [shared["id"]]
    [node] = api.get("/v1/nodes", headers=auth(actors.admin)).json()
    assert (node["free_cpus_milli"], node["free_memory_mib"]) == (14000, 65536 - 4096)
    # Members see capacity, not whose jobs hold it.
    assert all(g["jobs"] == [] for g in gpus_of(api, actors.member_b, "n1"))

    second = submit(api, actors.admin, resources={"blocks": 50, "gpu_memory_mib": 2000})
    ctx.admitter.run_once()
    gpus = gpus_of(api, actors.admin, "n1")
    assert sum(g["used_blocks"] for g in gpus) == 80
    assert sum(g["used_memory_mib"] for g in gpus) == 3000
    assert all(g["free_blocks"] == 100 - g["used_blocks"] for g in gpus)

    api.post(f"/v1/jobs/{shared['id']}/cancel", headers=auth(actors.admin))
    api.post(f"/v1/jobs/{second['id']}/cancel", headers=auth(actors.admin))
    gpus = gpus_of(api, actors.admin, "n1")
    assert [(g["free_blocks"], g["free_memory_mib"]) for g in gpus] == [(100, memory)] * 2


def test_health_needs_no_token(api, ctx) -> None:
    response = api.get("/v1/health")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok"
    assert answer["database"] == ctx.engine.dialect.name
    assert answer["broker"] == "memory" and answer["nodes_ready"] == 0 and answer["version"]


def test_openapi_lists_every_route_under_v1(api) -> None:
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = api.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    expected = {
        "/v1/jobs": {"get", "post"},
        "/v1/jobs/{job_id}": {"get"},
        "/v1/jobs/{job_id}/cancel": {"post"},
        "/v1/jobs/{job_id}/logs": {"get"},
        "/v1/projects": {"get", "post"},
        "/v1/tokens": {"post"},
        "/v1/nodes": {"get"},
        "/v1/health": {"get"},
        "/v1/agent/register": {"post"},
        "/v1/agent/heartbeat": {"post"},
        "/v1/agent/started": {"post"},
        "/v1/agent/exited": {"post"},
        "/v1/agent/logs": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from the OpenAPI description"
        assert methods <= set(paths[path]), (path, set(paths[path]))
    # Every API route the app serves is described, and lives under /v1.
    routes = [r for r in api.app.routes if isinstance(r, APIRoute)]
    for route in routes:
        assert route.path.startswith("/v1/"), route.path
        assert route.path in paths, f"{route.path} is served but not described"
        assert {m.lower() for m in route.methods} <= set(paths[route.path]), route.path
    assert all(p.startswith("/v1/") for p in paths), [p for p in paths if not p.startswith("/v1/")]

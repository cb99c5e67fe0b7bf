"""The request path's shortcuts keep their answers: health from memory, no thread hop for the context.

Speed itself is ``benchmarks/api_bench.py``'s business; these tests pin what
the shortcuts must not change (the same answer, the database still asked
once per ``HEALTH_FRESH_S``) and that they stay shortcuts (no pool thread
where none is needed).
"""

from __future__ import annotations

import fastapi.dependencies.utils as fastapi_deps

from queue_service.api.routes import admin
from queue_service.api.schemas.admin import HealthPublic


def _counting(monkeypatch, module) -> list[str]:
    """Count the calls ``module`` makes to ``run_in_threadpool`` (each is a hop to a pool thread)."""
    calls: list[str] = []
    original = module.run_in_threadpool

    async def counted(fn, *args, **kwargs):
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(module, "run_in_threadpool", counted)
    return calls


def test_health_asks_the_database_once_per_fresh_period(api, ctx, monkeypatch) -> None:
    reads = _counting(monkeypatch, admin)
    answers = [api.get("/v1/health") for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5
    assert reads == ["_health_now"]  # the first poll read it; the other four answered from memory
    body = answers[0].json()
    assert HealthPublic.model_validate(body).database == ctx.engine.dialect.name
    assert all(r.json() == body for r in answers)
    assert answers[0].headers["content-type"] == "application/json"


def test_health_reads_again_once_its_reading_is_stale(api, monkeypatch) -> None:
    reads = _counting(monkeypatch, admin)
    monkeypatch.setattr(admin, "HEALTH_FRESH_S", 0.0)
    for _ in range(3):
        assert api.get("/v1/health").status_code == 200
    assert reads == ["_health_now"] * 3


def test_health_is_the_first_route_matched_under_v1(api) -> None:
    # routes are matched in order; the poll of every load balancer should not walk the others first
    # (the OpenAPI document lists the paths in the order the routers match them)
    v1_paths = [p for p in api.get("/openapi.json").json()["paths"] if p.startswith("/v1/")]
    assert v1_paths[0] == "/v1/health", v1_paths[:5]


def test_the_context_dependency_needs_no_pool_thread(api, actors, monkeypatch) -> None:
    headers = {"Authorization": f"Bearer {actors.admin}"}
    assert api.get("/v1/jobs", headers=headers).status_code == 200  # the token is now cached
    hops = _counting(monkeypatch, fastapi_deps)
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    assert api.get("/v1/health").status_code == 200
    assert hops == []  # every dependency of these routes (context, session, principal) runs in the event loop

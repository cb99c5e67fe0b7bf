"""Helpers for billing tests: run a job through its life, pin ledger times, read usage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from queue_service.billing import rollups
from queue_service.context import ServiceContext
from queue_service.db.billing_models import UsageInterval
from tests.api.helpers import auth, exited, get_job, started, submit


def admitted(api: TestClient, ctx: ServiceContext, token: str, **overrides: Any) -> dict:
    job = submit(api, token, **overrides)
    ctx.admitter.run_once()
    job = get_job(api, token, job["id"])
    assert job["state"] == "admitted", job
    return job


def running(api: TestClient, ctx: ServiceContext, actors, token: str, **overrides: Any) -> dict:
    job = admitted(api, ctx, token, **overrides)
    for replica in range(len({a["replica"] for a in job["allocation"]})):
        response = started(api, actors.agent, job, replica=replica)
        assert response.status_code == 200, response.text
    return get_job(api, token, job["id"])


def finish(api: TestClient, actors, job: dict) -> None:
    response = exited(api, actors.agent, job)
    assert response.status_code == 200, response.text


def pin(ctx: ServiceContext, job_id: str, start: datetime, end: datetime | None) -> None:
    """Move a job's ledger intervals to fixed times, so windows and prices are exact (rollups rebuilt)."""
    with ctx.sessions() as session, session.begin():
        session.execute(update(UsageInterval).where(UsageInterval.job_id == job_id)
                        .values(started_at=start, ended_at=end))
    reroll(ctx)


def reroll(ctx: ServiceContext) -> None:
    """Rebuild the usage rollups after a test rewrote history (pinned times, prices set in the past)."""
    with ctx.sessions() as session, session.begin():
        rollups.rebuild(session)


def intervals(ctx: ServiceContext, job_id: str | None = None) -> list[UsageInterval]:
    with ctx.sessions() as session:
        query = select(UsageInterval).order_by(UsageInterval.id)
        if job_id is not None:
            query = query.where(UsageInterval.job_id == job_id)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def usage(api: TestClient, token: str, path: str = "/v1/projects/alpha/usage", **params: Any):
    return api.get(path, params=params, headers=auth(token))

"""What the lifecycle API tests share: a job's events and its rows, read back to prove nothing changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, update

from queue_service.context import ServiceContext
from queue_service.db.models import Allocation, Attempt, Job, JobEvent, Node
from tests.api.helpers import auth


def events(api: TestClient, token: str, job_id: str) -> list[dict[str, Any]]:
    """``GET /v1/jobs/{id}/events``, oldest first."""
    response = api.get(f"/v1/jobs/{job_id}/events", headers=auth(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    return body["data"]


def moves(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Events as (event, from, to, actor, attempt, cause): what a test compares."""
    return [(e["event"], e["from_state"], e["to_state"], e["actor"], e["attempt"], e["cause"]) for e in rows]


def _columns(obj: object) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in inspect(obj).mapper.column_attrs}


def rows(ctx: ServiceContext, job_id: str) -> dict[str, Any]:
    """Every lifecycle row of a job as plain values: the job, its attempts, allocations and events."""
    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {
            "job": _columns(job),
            "attempts": [_columns(a) for a in session.scalars(
                select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number))],
            "allocations": [_columns(a) for a in session.scalars(
                select(Allocation).where(Allocation.job_id == job_id).order_by(Allocation.id))],
            "events": [_columns(e) for e in session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))],
        }


def expire_lease(ctx: ServiceContext, node_name: str) -> None:
    """Make ``node_name``'s lease run out (as if it stopped heartbeating long ago)."""
    with ctx.sessions() as session, session.begin():
        session.execute(update(Node).where(Node.name == node_name).values(lease_expires_at=datetime(2000, 1, 1)))

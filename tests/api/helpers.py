"""Small helpers for API tests: headers, submit, read, agent reports, counting rows."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from queue_service.context import ServiceContext
from queue_service.db.models import Job
from tests.builders import job_body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(api: TestClient, token: str, **overrides: Any) -> dict:
    response = api.post("/v1/jobs", json=job_body(**overrides), headers=auth(token))
    assert response.status_code == 201, response.text
    return response.json()


def get_job(api: TestClient, token: str, job_id: str) -> dict:
    response = api.get(f"/v1/jobs/{job_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def job_count(ctx: ServiceContext) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def attempt_ref(job: dict, *, attempt: int | None = None, replica: int = 0) -> dict:
    """The agent's reference to a job's current attempt on its allocated node."""
    return {
        "node_name": job["allocation"][replica]["node"], "job_id": job["id"],
        "attempt": job["attempt"] if attempt is None else attempt, "replica": replica,
    }


def started(api: TestClient, token: str, job: dict, **kw: Any):
    return api.post("/v1/agent/started", json=attempt_ref(job, **kw), headers=auth(token))


def exited(api: TestClient, token: str, job: dict, *, exit_code: int | None = 0, reason: str = "exited",
           message: str = "", **kw: Any):
    body = attempt_ref(job, **kw) | {"exit_code": exit_code, "reason": reason, "message": message}
    return api.post("/v1/agent/exited", json=body, headers=auth(token))


def log_chunk(api: TestClient, token: str, job: dict, *, stream: str, offset: int, data: bytes, **kw: Any):
    body = attempt_ref(job, **kw) | {
        "stream": stream, "offset": offset, "data_b64": base64.b64encode(data).decode(),
    }
    return api.post("/v1/agent/logs", json=body, headers=auth(token))


def gpus_of(api: TestClient, token: str, node_name: str) -> list[dict]:
    response = api.get("/v1/nodes", headers=auth(token))
    assert response.status_code == 200, response.text
    [node] = [n for n in response.json() if n["name"] == node_name]
    return node["gpus"]

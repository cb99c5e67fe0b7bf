"""A placement's note (here: no NVLink clique free) reaches the job's reason once it is admitted."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from queue_service.db.models import Gpu
from tests.builders import job_body, register

NOTE = "starting (no NVLink-connected set of 3 free GPUs on any node: placed without one)"


@pytest.mark.parametrize(("gpus", "reason"), [(2, "starting"), (3, NOTE)])
def test_a_job_placed_without_an_nvlink_clique_says_so(ctx, api, actors, gpus: int, reason: str) -> None:
    register(api, actors.agent, "n1", "h100-80gb:3")
    with ctx.sessions() as session, session.begin():
        found = sorted(session.scalars(select(Gpu)).all(), key=lambda g: g.index)
        found[0].nvlink_peers, found[1].nvlink_peers = [1], [0]  # GPUs 0-1 are a clique; GPU 2 is linked to neither
    h = actors.headers(actors.admin)
    job_id = api.post("/v1/jobs", json=job_body(resources={"gpus": gpus}), headers=h).json()["id"]
    ctx.admitter.run_once()
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert (job["state"], job["reason"]) == ("admitted", reason)

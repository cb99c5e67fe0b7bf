"""Regression (issue 9): one A30 ``2g.12gb`` instance counts the same everywhere — 0.5 GPU (2 of 4 slices).

It counted 2/7 for quotas and fair share but 2/4 for the bill and ``/metrics``.
Driven through the service: register an A30, submit the MIG job, let the
admitter carve and admit it, start it, then read quota in-use, the usage
report, ``/metrics`` and the admission snapshot's view.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from queue_service import snapshots
from queue_service.db.models import Allocation
from queue_service.services import quotas as quota_service
from tests import builders
from tests.api.helpers import auth
from tests.billing.helpers import pin, running, usage

A30_2G = 0.5
T0 = datetime(2026, 11, 2, 10, 0)
H = timedelta(hours=1)


@pytest.fixture
def a30_job(api, ctx, actors) -> dict:
    builders.register(api, actors.agent, "n1", "a30:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha", resources={"mig": "2g.12gb"})
    [alloc] = job["allocation"]
    assert alloc["kind"] == "mig" and alloc["mig_profile"] == "2g.12gb", alloc
    return job


def test_an_a30_2g_instance_is_half_a_gpu_in_quota_bill_and_metrics(api, ctx, actors, a30_job) -> None:
    # Quota in-use: the route and the service function.
    response = api.put("/v1/projects/alpha/quota", json={"guaranteed": 1}, headers=auth(actors.operator))
    assert response.status_code == 200, response.text
    assert response.json()["in_use"] == pytest.approx(A30_2G)
    [quota] = [q for q in api.get("/v1/quotas", headers=auth(actors.admin)).json() if q["project"] == "alpha"]
    assert quota["in_use"] == pytest.approx(A30_2G)
    with ctx.sessions() as session:
        assert quota_service.in_use(session)["alpha"] == pytest.approx(A30_2G)
        # The admission cycle's own view: running jobs and fair share use the same unit.
        [held] = snapshots.running_jobs(session, now=T0, classes={})
        assert held.gpu_equivalents == pytest.approx(A30_2G)

    # /metrics: held now, per project and as a share of the GPU.
    text = api.get("/metrics").text
    assert 'gpuq_project_allocated_gpus{project="alpha"} 0.5' in text
    assert any(line.startswith("gpuq_gpu_allocated_ratio{") and line.endswith(" 0.5") for line in text.splitlines())

    # The bill: two hours held are one GPU-equivalent hour.
    pin(ctx, a30_job["id"], T0, T0 + 2 * H)
    body = usage(api, actors.member_a, start=T0.isoformat(), end=(T0 + 3 * H).isoformat()).json()
    assert body["total"]["mig_hours"] == pytest.approx(2.0)
    assert body["total"]["gpu_equivalent_hours"] == pytest.approx(2 * A30_2G)
    text = api.get("/metrics").text
    assert f'gpuq_usage_gpu_equivalent_seconds_total{{project="alpha"}} {2 * 3600 * A30_2G}' in text


def test_fair_share_counts_an_a30_2g_instance_as_half_a_gpu(ctx, a30_job) -> None:
    half_life_s = 3600.0
    with ctx.sessions() as session:
        created = session.scalars(select(Allocation.created_at).where(Allocation.job_id == a30_job["id"])).one()
        standing = snapshots.fair_share(session, now=created + timedelta(seconds=100), half_life_s=half_life_s)
    # Held for 100 s at 0.5 GPU, decayed by at most 2^(-100/3600): about 50 GPU-seconds (weight 1).
    assert standing["alpha"] == pytest.approx(A30_2G * 100, rel=0.02)

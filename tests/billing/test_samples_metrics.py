"""Measured usage from agents' samples, idle flagging and reclaim, and /metrics."""

from __future__ import annotations

import pytest

from tests import builders
from tests.api.helpers import auth, get_job
from tests.billing.helpers import running, usage


def _post(api, actors, job, *, sm, window_s=30.0, mem=1000, gpu=None):
    body = {"node_name": job["allocation"][0]["node"], "samples": [{
        "job_id": job["id"], "attempt": job["attempt"], "replica": 0,
        "gpu_uuid": gpu or job["allocation"][0]["gpu_uuid"], "window_s": window_s, "sm_percent": sm,
        "memory_used_mib": mem}]}
    return api.post("/v1/agent/samples", json=body, headers=auth(actors.agent))


def test_busy_share_and_peak_memory(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    for sm, mem in ((100, 2000), (50, 6000), (0, 1000), (None, 3000)):
        assert _post(api, actors, job, sm=sm, mem=mem).status_code == 200
    row = usage(api, actors.member_a, group_by="job").json()["rows"][0]
    assert row["busy_share"] == pytest.approx(0.5) and row["peak_memory_used_mib"] == 6000


def test_an_agent_reports_only_its_own_allocations(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    assert _post(api, actors, job, sm=10, gpu="GPU-not-mine").status_code == 409
    body = {"node_name": "n1", "samples": []}
    assert api.post("/v1/agent/samples", json=body, headers=auth(actors.member_a)).status_code == 403


def test_idle_jobs_are_flagged_and_reclaimed_when_switched_on(api, ctx, actors) -> None:
    ctx.settings.idle_after_s = 60.0
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    assert _post(api, actors, job, sm=1, window_s=30).json()["idle"] == []  # 30 s of evidence is not enough
    flagged = _post(api, actors, job, sm=2, window_s=61).json()["idle"]
    assert flagged == [{"job_id": job["id"], "attempt": 1, "reclaimed": False}]
    assert get_job(api, actors.admin, job["id"])["state"] == "running"  # flagging alone changes nothing
    ctx.settings.idle_reclaim = True
    assert _post(api, actors, job, sm=0, window_s=61).json()["idle"][0]["reclaimed"] is True
    after = get_job(api, actors.admin, job["id"])
    assert "idle-reclaim" in after["reason"]


def test_a_busy_job_is_not_idle(api, ctx, actors) -> None:
    ctx.settings.idle_after_s, ctx.settings.idle_reclaim = 60.0, True
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    _post(api, actors, job, sm=1, window_s=61)
    assert _post(api, actors, job, sm=90, window_s=61).json()["idle"] == []


def test_metrics(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    running(api, ctx, actors, actors.member_b, project="beta", resources={"blocks": 25, "gpu_memory_mib": 1024})
    _post(api, actors, job, sm=80)
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("gpuq_queue_wait_seconds_bucket", "gpuq_jobs{", "gpuq_admissions_total", "gpuq_preemptions_total",
                 "gpuq_admission_cycle_duration_seconds_bucket", "gpuq_gpu_allocated_ratio",
                 "gpuq_gpu_busy_ratio", "gpuq_project_allocated_gpus", "gpuq_project_busy_ratio",
                 "gpuq_usage_cost_total", "gpuq_usage_gpu_equivalent_seconds_total"):
        assert name in text, name
    assert 'gpuq_jobs{state="running"} 2.0' in text
    assert 'gpuq_project_allocated_gpus{project="beta"} 0.25' in text
    assert 'gpuq_admissions_total{project="alpha"} 1.0' in text
    allocated = sorted(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("gpuq_gpu_allocated_ratio{"))
    assert allocated == [0.25, 1.0]
    assert 'gpuq_project_busy_ratio{project="alpha"} 0.8' in text
    assert any(line.startswith("gpuq_queue_wait_seconds_count") and 'project="alpha"' in line
               and 'priority_class="normal"' in line for line in text.splitlines())

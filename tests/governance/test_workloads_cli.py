"""The governance commands against the app in-process: gpuq workload, coexistence, allowlist; the jobs column."""

from __future__ import annotations

from tests.cli.conftest import app_client, gpuq  # noqa: F401 - the CLI fixtures


def test_governance_commands(gpuq) -> None:  # noqa: F811
    listed = gpuq("workload", "list")
    assert listed.exit_code == 0 and "inference" in listed.output and "SHARES GPU" in listed.output, listed.output
    made = gpuq("workload", "set", "rendering", "--alone-on-gpu", "--max-time-limit-s", "3600", "--reason", "r")
    assert made.exit_code == 0, made.output
    assert "rendering" in gpuq("workload", "list").output
    shown = gpuq("coexistence", "show")
    assert shown.exit_code == 0 and "MAY SHARE A GPU WITH" in shown.output
    refused = gpuq("coexistence", "set", "training", "--gpu", "inference")  # inference's row says no
    assert refused.exit_code != 0 and "422" in refused.output and "both ways" in refused.output, refused.output
    lists = gpuq("allowlist", "set", "alpha", "--image", "registry.internal/vision/*", "--volume", "/data:ro",
                 "--volume", "/scratch:rw")
    assert lists.exit_code == 0 and "/scratch (rw)" in lists.output, lists.output
    assert "registry.internal/vision/*" in gpuq("allowlist", "show", "alpha", as_="member").output
    assert gpuq("allowlist", "set", "alpha", "--image", "x", as_="member").exit_code != 0, "admins only"
    job = gpuq.api.post("/v1/jobs", json={"command": ["true"], "resources": {"gpus": 1}, "workload": "inference"})
    assert job.status_code == 201, job.text
    jobs = gpuq("jobs")
    assert jobs.exit_code == 0 and "WORKLOAD" in jobs.output and "inference" in jobs.output, jobs.output

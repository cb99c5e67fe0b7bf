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


def test_submit_takes_workload_labels_and_volumes(gpuq) -> None:  # noqa: F811
    gpuq("allowlist", "set", "alpha", "--volume", "/data:ro")
    done = gpuq("submit", "--json", "--project", "alpha", "--image", "busybox", "--workload", "inference",
                "--label", "feature=search", "--volume", "/data/a:/in", "--", "true", as_="member")
    assert done.exit_code == 0, done.output
    assert '"workload": "inference"' in done.output and '"feature": "search"' in done.output
    assert '"container_path": "/in"' in done.output
    bad = gpuq("submit", "--project", "alpha", "--image", "busybox", "--volume", "/data/a:/in:rw", "--", "true",
               as_="member")
    assert bad.exit_code != 0 and "read-only" in bad.output, bad.output
    assert gpuq("submit", "--label", "nolabel", "--", "true").exit_code != 0

"""The approval commands against the app in-process (SQLite): policy, submit into pending_approval, approvals,
approve and deny by prefix, budgets, capacity requests and the granted column of ``gpuq quota list``."""

from __future__ import annotations

import json

from tests.cli.conftest import app_client, gpuq  # noqa: F401  (the CLI fixtures, shared)
from tests.support.builders import inventory


def _ok(out) -> str:
    assert out.exit_code == 0, out.output
    return str(out.output)


def test_the_approval_commands(gpuq) -> None:  # noqa: F811
    assert gpuq.api.post("/v1/agent/register", json={"inventory": inventory("n1", "h100-80gb:2").to_dict()}
                         ).status_code == 200
    assert "alpha: approval for above 1 GPU-h" in _ok(gpuq("policy", "set", "alpha", "--max-gpu-hours", "1"))
    made = [json.loads(_ok(gpuq("submit", "--project", "alpha", "--gpus", "1", "--time-limit", "2h", "--json",
                                "--", "true", as_="member"))) for _ in range(2)]
    assert [j["state"] for j in made] == ["pending_approval", "pending_approval"]
    inbox = _ok(gpuq("approvals", as_="member"))
    assert made[0]["id"] in inbox and "asks up to 2 GPU-h" in inbox
    listed = _ok(gpuq("jobs", as_="member"))  # a pending job is live: plain `gpuq jobs` lists it
    assert made[0]["id"][:8] in listed and "pending_approval" in listed, listed
    refused = gpuq("approve", made[0]["id"][:10], as_="member")  # a plain member may not decide
    assert refused.exit_code != 0 and "403" in refused.output
    assert ": queued (approved by admin:admin" in _ok(gpuq("approve", made[0]["id"][:10], "--expires-in", "1h"))
    assert "denied by admin:admin: not this month" in _ok(gpuq("deny", made[1]["id"], "--reason", "not this month"))
    again = gpuq("deny", made[1]["id"], "--reason", "twice")
    assert again.exit_code != 0 and "409" in again.output

    bad = gpuq("budget", "set", "alpha", "--amount", "-1")
    assert bad.exit_code != 0 and "amount" in bad.output
    assert "alpha: 400 gpu_hours a month (hard); budget for" in _ok(gpuq("budget", "set", "alpha", "--amount", "400"))

    asked = json.loads(_ok(gpuq("request", "capacity", "--project", "alpha", "--gpus", "1", "--until", "+1d",
                                "--reason", "deadline", "--json", as_="member")))
    assert asked["status"] == "pending"
    past = gpuq("request", "capacity", "--project", "alpha", "--gpus", "1", "--until", "2020-01-01", as_="member")
    assert past.exit_code != 0 and "until" in past.output
    assert "granted by admin:admin" in _ok(gpuq("capacity", "grant", asked["id"]))
    assert "+1 until" in _ok(gpuq("quota", "list"))

"""Arbitration scenarios on a real ``gpuq serve`` with simulated GPUs and real processes:
preemption with a grace period, quota reclaim from a borrower, an override to the head,
a forced node reclaim, and backfill that does not delay the reserved head."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.test_embedded import Server

# Stop quickly in tests: experiments get a 1 s grace; nothing is protected by a minimum run time.
CLASSES = {"production": {"value": 1000, "preemptible": False, "grace_s": 5},
           "normal": {"value": 500, "preemptible": False, "grace_s": 1},
           "experiment": {"value": 100, "preemptible": True, "grace_s": 1}}
ENV = {"GPUQ_PRIORITY_CLASSES": json.dumps(CLASSES), "GPUQ_MIN_RUN_S": "0", "GPUQ_ADMISSION_INTERVAL_S": "0.5"}
SLEEPER = ["sh", "-c", "trap 'exit 143' TERM; sleep 120 & wait"]


@pytest.fixture
def server(tmp_path: Path):
    srv = Server(tmp_path, None, gpus="h100-80gb:2", extra_env=ENV)
    try:
        yield srv
    finally:
        srv.stop()


def submit(server: Server, **body) -> str:
    body.setdefault("command", SLEEPER)
    body.setdefault("resources", {"gpus": 1})
    response = server.http.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def job(server: Server, job_id: str) -> dict:
    return server.http.get(f"/v1/jobs/{job_id}").json()


def wait_for(server: Server, job_id: str, predicate, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = job(server, job_id)
        if predicate(current):
            return current
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the expected state: {current}")


def running(j: dict) -> bool:
    return j["state"] == "running"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_production_preempts_one_experiment_after_its_grace(server: Server) -> None:
    experiments = [submit(server, name=f"exp{i}", priority_class="experiment") for i in range(2)]
    for e in experiments:
        wait_for(server, e, running)
    submitted = time.monotonic()
    prod = submit(server, name="prod", priority_class="production", command=["sleep", "30"])
    started = wait_for(server, prod, running, timeout_s=15)
    assert time.monotonic() - submitted < 1 + 5, "starts within one cycle after the victim's 1 s grace"
    states = [job(server, e) for e in experiments]
    victims = [s for s in states if s["preemptions"] == 1]
    assert len(victims) == 1, "the fewest victims: one GPU frees room for one GPU"
    victim = victims[0]
    assert victim["state"] == "queued" and victim["attempt"] == 1, "requeued; its next admission is attempt 2"
    assert victim["submitted_at"] < started["submitted_at"], "requeued at its original position"
    assert next(s for s in states if s is not victim)["state"] == "running"
    # No preemption loop: the requeued experiment waits, the production job keeps running.
    time.sleep(2)
    assert job(server, prod)["state"] == "running" and job(server, victim["id"])["state"] == "queued"


def test_project_under_its_guarantee_reclaims_from_a_borrower(server: Server) -> None:
    for name in ("alpha", "beta"):
        assert server.http.post("/v1/projects", json={"name": name}).status_code == 201
    quota = server.http.put("/v1/projects/alpha/quota", json={"guaranteed": 1, "borrow_limit": 0})
    assert quota.status_code == 200, quota.text
    too_much = server.http.put("/v1/projects/beta/quota", json={"guaranteed": 2})
    assert too_much.status_code == 422 and "add up" in too_much.json()["detail"]
    borrowed = [submit(server, project="beta", name=f"b{i}") for i in range(2)]  # normal class: not preemptible
    for b in borrowed:
        wait_for(server, b, running)
    owed = submit(server, project="alpha", name="owed")
    wait_for(server, owed, running, timeout_s=15)
    states = [job(server, b) for b in borrowed]
    assert sorted(s["state"] for s in states) == ["queued", "running"]
    assert [s["preemptions"] for s in states if s["state"] == "queued"] == [1]
    # alpha may not borrow beyond its guarantee (borrow_limit 0): a second alpha job waits on quota.
    second = submit(server, project="alpha", name="second")
    waiting = wait_for(server, second, lambda j: "quota" in j["reason"], timeout_s=5)
    assert waiting["state"] == "queued"


def test_override_and_move_to_top(server: Server) -> None:
    blockers = [submit(server, name=f"hold{i}") for i in range(2)]
    for b in blockers:
        wait_for(server, b, running)
    queued = [submit(server, name=f"q{i}", command=["sleep", "30"]) for i in range(3)]
    top = server.http.post(f"/v1/jobs/{queued[2]}/top", json={"reason": "deadline"})
    assert top.status_code == 200 and top.json()["priority_override"] > 500
    patched = server.http.patch(f"/v1/jobs/{queued[0]}", json={"priority": 400, "reason": "can wait"})
    assert patched.status_code == 200 and patched.json()["priority_override"] == 400
    # Order now: q2 (moved to the top), q1 (normal, 500), q0 (overridden below every normal job).
    server.http.post(f"/v1/jobs/{blockers[0]}/cancel")
    wait_for(server, queued[2], running)
    assert job(server, queued[0])["state"] == "queued" and job(server, queued[1])["state"] == "queued"
    server.http.post(f"/v1/jobs/{blockers[1]}/cancel")
    wait_for(server, queued[1], running)
    assert job(server, queued[0])["state"] == "queued"
    audit = server.http.get("/v1/audit").json()["data"]
    actions = sorted(a["action"] for a in audit if a["target"] in queued)
    assert actions == ["job.priority", "job.top"], "one audit row per operator action"
    assert server.http.patch(f"/v1/jobs/{queued[0]}", json={"priority": None}).json()["priority_override"] is None


def test_forced_node_reclaim_empties_the_node_within_the_grace(server: Server) -> None:
    jobs = [submit(server, name=f"r{i}", resources={"blocks": 30, "gpu_memory_mib": 1000}) for i in range(3)]
    jobs.append(submit(server, name="whole"))
    for j in jobs:
        wait_for(server, j, running)
    asked = time.monotonic()
    answer = server.http.post("/v1/reclaim", json={"node": "e2e-node", "grace_s": 1, "reason": "maintenance"})
    assert answer.status_code == 200 and sorted(answer.json()["jobs"]) == sorted(jobs)
    for j in jobs:
        wait_for(server, j, lambda s: s["state"] == "queued", timeout_s=10)
    assert time.monotonic() - asked < 1 + 5
    node = server.http.get("/v1/nodes").json()[0]
    assert node["cordoned"] is True
    assert all(g["free_blocks"] == 100 and not g["held_whole"] for g in node["gpus"])
    time.sleep(1.5)  # cordoned: nothing comes back
    assert all(job(server, j)["state"] == "queued" for j in jobs)
    assert server.http.post("/v1/nodes/e2e-node/uncordon").status_code == 200
    for j in jobs:
        wait_for(server, j, running)


def test_backfill_fills_the_gap_without_delaying_the_reserved_head(server: Server) -> None:
    first = submit(server, name="first", command=["sleep", "3"], time_limit_s=5)
    wait_for(server, first, running)
    head = submit(server, name="head", resources={"gpus": 2}, command=["sleep", "1"], time_limit_s=10)
    short = submit(server, name="short", command=["sleep", "1"], time_limit_s=2)
    unlimited = submit(server, name="unlimited", command=["sleep", "1"])
    long = submit(server, name="long", command=["sleep", "1"], time_limit_s=60)
    wait_for(server, short, lambda j: j["state"] in ("running", "succeeded"), timeout_s=5)
    # Each submit wakes a cycle, so `short` may start in a cycle that ran before the later jobs were
    # in; their reasons come with the next cycle (0.5 s), well before `first` ends and frees the head.
    wait_for(server, head, lambda j: "reserved" in j["reason"], timeout_s=2)
    wait_for(server, unlimited, lambda j: "without a time limit" in j["reason"], timeout_s=2)
    wait_for(server, long, lambda j: head in j["reason"], timeout_s=2)  # it waits for the head's reservation
    first_done = wait_for(server, first, lambda j: j["state"] == "succeeded", timeout_s=15)
    head_started = wait_for(server, head, lambda j: j["started_at"] is not None, timeout_s=10)
    gap_s = (ts(head_started["started_at"]) - ts(first_done["finished_at"])).total_seconds()
    assert gap_s < 2, "the head starts as soon as its reservation frees: backfill did not delay it"
    for j in (unlimited, long):
        assert ts(job(server, j)["started_at"] or "9999-01-01T00:00:00+00:00") >= ts(head_started["started_at"])


def test_backfill_admitted_in_the_same_cycle_as_the_head_cannot_delay_it(server: Server) -> None:
    """Issue 14's scenario: A (1 GPU, 8 s limit), HEAD (2 GPUs), B (1 GPU, 1000 s limit) all queued at once.

    One cycle admits A; HEAD's reservation must count A's end (admitted in the same cycle), so B,
    which would outlast it on the GPU HEAD needs, waits: HEAD starts when A ends, B after HEAD.
    """
    assert server.http.post("/v1/nodes/e2e-node/cordon").status_code == 200
    a = submit(server, name="a", priority_class="production", command=["sleep", "2"], time_limit_s=8)
    head = submit(server, name="head", resources={"gpus": 2}, command=["sleep", "1"], time_limit_s=30)
    b = submit(server, name="b", command=["sleep", "1"], time_limit_s=1000)
    assert server.http.post("/v1/nodes/e2e-node/uncordon").status_code == 200
    wait_for(server, a, running, timeout_s=10)
    waiting = job(server, b)
    assert waiting["state"] == "queued" and "reserved" in waiting["reason"], waiting
    a_done = wait_for(server, a, lambda j: j["state"] == "succeeded", timeout_s=15)
    head_started = wait_for(server, head, lambda j: j["started_at"] is not None, timeout_s=10)
    assert (ts(head_started["started_at"]) - ts(a_done["finished_at"])).total_seconds() < 2, "HEAD starts as A ends"
    b_started = wait_for(server, b, lambda j: j["started_at"] is not None, timeout_s=15)
    assert ts(b_started["started_at"]) >= ts(head_started["started_at"]), "B never jumped HEAD"

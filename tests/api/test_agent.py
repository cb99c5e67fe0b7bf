"""/v1/agent: register, heartbeat, the start claim, exit reports (fenced by attempt), roles and node binding."""

from __future__ import annotations

import pytest

from tests import builders
from tests.api.helpers import attempt_ref, auth, exited, get_job, gpus_of, log_chunk, started, submit


def _admitted(api, ctx, actors, **overrides) -> dict:
    job = submit(api, actors.admin, **overrides)
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert job["state"] == "admitted", job
    return job


def test_start_claim(api, ctx, actors) -> None:
    builders.register(api, actors.agent_for("n1"), "n1", "h100-80gb:1")
    builders.register(api, actors.agent_for("n2"), "n2", "h100-80gb:1")
    job = _admitted(api, ctx, actors)
    node = job["allocation"][0]["node"]
    other = "n2" if node == "n1" else "n1"
    mine, theirs = actors.agent_for(node), actors.agent_for(other)

    refusals = [
        ("a future attempt", attempt_ref(job, attempt=2), mine, 409),
        ("a node without the allocation (its own agent)", attempt_ref(job) | {"node_name": other}, theirs, 409),
        ("another node's name", attempt_ref(job) | {"node_name": other}, mine, 403),
        ("another node's agent", attempt_ref(job), theirs, 403),
        ("a replica that does not exist", attempt_ref(job) | {"replica": 1}, mine, 409),
        ("an unknown job", attempt_ref(job) | {"job_id": "f" * 20}, mine, 404),
        ("attempt 0", attempt_ref(job, attempt=0), mine, 422),
    ]
    for case, body, token, status in refusals:
        response = api.post("/v1/agent/started", json=body, headers=auth(token))
        assert response.status_code == status, (case, response.text)
    assert get_job(api, actors.admin, job["id"])["state"] == "admitted", "a refused claim changed the job"

    response = started(api, mine, job)
    assert response.status_code == 200, response.text
    assert response.json() == {"state": "running"}
    running = get_job(api, actors.admin, job["id"])
    assert running["state"] == "running" and running["started_at"] is not None and running["reason"] == ""
    # A repeated claim (a retried request) is harmless.
    assert started(api, mine, job).json() == {"state": "running"}
    assert get_job(api, actors.admin, job["id"])["started_at"] == running["started_at"]


def test_start_claim_of_a_cancelled_job_is_refused(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = _admitted(api, ctx, actors)
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.admin)).json()["state"] == "cancelled"
    response = started(api, actors.agent, job)
    assert response.status_code == 409, response.text
    assert "cancelled" in response.json()["detail"]
    assert get_job(api, actors.admin, job["id"])["state"] == "cancelled"


# (exit_code, reason, final state, exit_code shown, words the reason contains)
OUTCOMES = [
    (0, "exited", "succeeded", 0, ""),
    (3, "exited", "failed", 3, "code 3"),
    (None, "timed_out", "timed_out", None, "time limit"),
    (137, "oom_killed", "failed", 137, "memory"),
    (None, "start_failed", "failed", None, "could not start"),
]


def test_exit_reports_finish_the_job_and_free_its_allocation(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    jobs = [submit(api, actors.admin, name=f"j{i}", time_limit_s=60, resources={"gpus": 1, "memory_mib": 512})
            for i in range(len(OUTCOMES))]
    for (code, reason, state, shown_code, words), job in zip(OUTCOMES, jobs, strict=True):
        ctx.admitter.run_once()
        job = get_job(api, actors.admin, job["id"])
        assert job["state"] == "admitted", (reason, job)
        assert started(api, actors.agent, job).status_code == 200
        # Nothing else is admitted while this job holds the only GPU.
        assert ctx.admitter.run_once().admitted == 0

        response = exited(api, actors.agent, job, exit_code=code, reason=reason, message="boom")
        assert response.status_code == 200, (reason, response.text)
        assert response.json() == {"state": state, "finalized": True}
        final = get_job(api, actors.admin, job["id"])
        assert (final["state"], final["exit_code"]) == (state, shown_code), (reason, final)
        assert words in final["reason"], (reason, final["reason"])
        assert final["finished_at"] is not None
        [gpu] = gpus_of(api, actors.admin, "n1")
        assert not gpu["held_whole"] and gpu["jobs"] == [], (reason, gpu)
    ctx.admitter.run_once()
    assert all(get_job(api, actors.admin, j["id"])["state"] != "queued" for j in jobs)


def test_stale_and_duplicate_exit_reports(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    builders.register(api, actors.agent_for("n2"), "n2")  # no GPUs: nothing is ever allocated there
    job = _admitted(api, ctx, actors)
    nxt = submit(api, actors.admin)
    started(api, actors.agent, job)

    for case, body, token in (
        ("a future attempt", attempt_ref(job, attempt=2), actors.agent),
        ("a node without the allocation", attempt_ref(job) | {"node_name": "n2"}, actors.agent_for("n2")),
    ):
        response = api.post("/v1/agent/exited", json=body | {"exit_code": 1, "reason": "exited"},
                            headers=auth(token))
        assert response.status_code == 409, (case, response.text)
        assert get_job(api, actors.admin, job["id"])["state"] == "running", case
        assert gpus_of(api, actors.admin, "n1")[0]["held_whole"], case

    assert exited(api, actors.agent, job, exit_code=0).json() == {"state": "succeeded", "finalized": True}
    done = get_job(api, actors.admin, job["id"])
    ctx.admitter.run_once()
    nxt = get_job(api, actors.admin, nxt["id"])
    assert nxt["state"] == "admitted"
    # A duplicate (even with different content) changes nothing, and does not free the next job's GPU.
    for code in (0, 1):
        response = exited(api, actors.agent, job, exit_code=code)
        assert response.status_code == 200, response.text
        assert response.json() == {"state": "succeeded", "finalized": True}
        assert get_job(api, actors.admin, job["id"]) == done
        [gpu] = gpus_of(api, actors.admin, "n1")
        assert gpu["held_whole"] and gpu["jobs"] == [nxt["id"]]
    # A finished attempt cannot be claimed again.
    assert started(api, actors.agent, done).status_code == 409


def test_register_and_heartbeat(api, ctx, actors) -> None:
    answer = builders.register(api, actors.agent, "n1", "h100-80gb:2", cpus=8, memory_mib=65536)
    assert answer["node_id"] and answer["lease_s"] == ctx.settings.node_lease_s
    # Registering again refreshes the same node.
    again = builders.register(api, actors.agent, "n1", "h100-80gb:2", cpus=8, memory_mib=65536)
    assert again["node_id"] == answer["node_id"]
    nodes = api.get("/v1/nodes", headers=auth(actors.viewer)).json()
    assert [n["name"] for n in nodes] == ["n1"] and len(nodes[0]["gpus"]) == 2

    beat = api.post("/v1/agent/heartbeat", json={"node_name": "n1"}, headers=auth(actors.agent))
    assert beat.status_code == 200 and beat.json()["known"] is True
    beat = api.post("/v1/agent/heartbeat", json={"node_name": "ghost"}, headers=auth(actors.agent_for("ghost")))
    assert beat.status_code == 200 and beat.json()["known"] is False

    for body in ({"inventory": {"node_name": "n3"}}, {"inventory": "n3"}, {}):
        response = api.post("/v1/agent/register", json=body, headers=auth(actors.agent))
        assert response.status_code == 422, (body, response.text)
        assert "inventory" in response.json()["detail"], response.json()


def _agent_calls(job: dict, node_name: str) -> list[tuple[str, dict]]:
    ref = attempt_ref(job) | {"node_name": node_name}
    return [
        ("/v1/agent/register", {"inventory": builders.inventory(node_name, "h100-80gb:1").to_dict()}),
        ("/v1/agent/heartbeat", {"node_name": node_name}),
        ("/v1/agent/started", ref),
        ("/v1/agent/exited", ref | {"exit_code": 0, "reason": "exited"}),
        ("/v1/agent/logs", ref | {"stream": "stdout", "offset": 0, "data_b64": "aGk="}),
    ]


@pytest.mark.parametrize("who", ["operator", "viewer", "member_a"])
def test_agent_routes_refuse_other_roles(who, api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = _admitted(api, ctx, actors, project="alpha")
    for path, body in _agent_calls(job, "n1"):
        response = api.post(path, json=body, headers=auth(getattr(actors, who)))
        assert response.status_code == 403, (who, path, response.text)
        assert api.post(path, json=body).status_code == 401, path
    after = get_job(api, actors.admin, job["id"])
    assert after["state"] == "admitted" and after["attempt"] == 1
    assert api.get(f"/v1/jobs/{job['id']}/logs", headers=auth(actors.admin)).json()["stdout"] == ""


def test_an_agent_token_bound_to_a_node_reports_only_for_it(api, ctx, actors) -> None:
    made = api.post("/v1/tokens", json={"role": "agent", "name": "agent-x", "node_name": "x"},
                    headers=auth(actors.admin))
    assert made.status_code == 201, made.text
    agent_x = made.json()["token"]
    builders.register(api, agent_x, "x")  # no GPUs: jobs go to y
    builders.register(api, actors.agent_for("y"), "y", "h100-80gb:1")
    job = _admitted(api, ctx, actors)
    assert job["allocation"][0]["node"] == "y"

    for path, body in _agent_calls(job, "y"):
        response = api.post(path, json=body, headers=auth(agent_x))
        assert response.status_code == 403, (path, response.text)
        assert "bound to node 'x'" in response.json()["detail"]
    assert get_job(api, actors.admin, job["id"])["state"] == "admitted"
    assert api.post("/v1/agent/heartbeat", json={"node_name": "x"}, headers=auth(agent_x)).json()["known"] is True
    # Naming its own node does not let it report for a job allocated on y.
    for path, body in _agent_calls(job, "x")[2:]:
        response = api.post(path, json=body, headers=auth(agent_x))
        assert response.status_code == 409, (path, response.text)
    assert get_job(api, actors.admin, job["id"])["state"] == "admitted"
    assert api.get(f"/v1/jobs/{job['id']}/logs", headers=auth(actors.admin)).json()["stdout"] == ""
    # y's own agent token (and an admin) may act for y.
    assert started(api, actors.agent_for("y"), job).status_code == 200
    assert exited(api, actors.admin, job, exit_code=0).json()["state"] == "succeeded"


def test_logs_written_by_the_agent_and_followed_by_offset(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = _admitted(api, ctx, actors, project="alpha")
    started(api, actors.agent, job)

    def post(stream: str, offset: int, data: bytes) -> int:
        response = log_chunk(api, actors.agent, job, stream=stream, offset=offset, data=data)
        assert response.status_code == 200, response.text
        return response.json()["end"]

    def read(**params) -> dict:
        response = api.get(f"/v1/jobs/{job['id']}/logs", params=params, headers=auth(actors.member_a))
        assert response.status_code == 200, response.text
        return response.json()

    assert post("stdout", 0, b"hello ") == 6
    assert post("stdout", 6, b"world\n") == 12
    assert post("stderr", 0, "warn: é\n".encode()) == 9
    first = read()
    assert (first["stdout"], first["stderr"]) == ("hello world\n", "warn: é\n")
    assert (first["stdout_offset"], first["stderr_offset"], first["final"]) == (12, 9, False)
    assert first["attempt"] == 1

    # A follower passes the offsets back and gets only what is new.
    nothing = read(stdout_offset=12, stderr_offset=9)
    assert (nothing["stdout"], nothing["stderr"], nothing["stdout_offset"], nothing["stderr_offset"]) == ("", "", 12, 9)
    assert post("stdout", 12, b"step 1\n") == 19
    new = read(stdout_offset=12, stderr_offset=9)
    assert (new["stdout"], new["stderr"], new["stdout_offset"]) == ("step 1\n", "", 19)

    # Resent and overlapping chunks are not duplicated.
    assert post("stdout", 0, b"hello ") == 19
    assert post("stdout", 6, b"world\n") == 19
    assert post("stdout", 12, b"step 1\nstep 2\n") == 26
    assert read()["stdout"] == "hello world\nstep 1\nstep 2\n"

    # An offset inside a chunk reads from that byte.
    assert read(stdout_offset=3)["stdout"] == "lo world\nstep 1\nstep 2\n"

    # Bad chunks are refused.
    for case, kw, status in (
        ("not base64", {"data_b64": "***"}, 422),
        ("bad stream", {"stream": "stdin"}, 422),
        ("negative offset", {"offset": -1}, 422),
        ("future attempt", {"attempt": 2}, 409),
        ("another node's name", {"node_name": "elsewhere"}, 403),
        ("a replica that does not exist", {"replica": 1}, 409),
    ):
        body = attempt_ref(job) | {"stream": "stdout", "offset": 26, "data_b64": "eA=="} | kw
        response = api.post("/v1/agent/logs", json=body, headers=auth(actors.agent))
        assert response.status_code == status, (case, response.text)
    assert read()["stdout_offset"] == 26

    exited(api, actors.agent, job, exit_code=0)
    assert read()["final"] is True
    # The attempt is over: its agent can add nothing to its output.
    late = log_chunk(api, actors.agent, job, stream="stdout", offset=26, data=b"late\n")
    assert late.status_code == 409, late.text
    assert read()["stdout"] == "hello world\nstep 1\nstep 2\n"
    assert api.get(f"/v1/jobs/{job['id']}/logs", headers=auth(actors.member_b)).status_code == 404

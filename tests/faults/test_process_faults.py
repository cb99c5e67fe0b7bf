"""Faults with host-process jobs: agents and the embedded server killed or stopped under running jobs.

Each job writes its own start / alive / end stamps (``Cluster.stamp_command``), so ``check_stamps``
proves from the processes themselves, not the database, that no job ran twice at once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.faults.checker import check_invariants, check_stamps, stamps
from tests.faults.cluster import Cluster, wait_for


def _submit(cluster: Cluster, seconds: float, *, lines: int = 0, retry_s: float | None = None) -> str:
    return cluster.submit(cluster.stamp_command(seconds, lines=lines, retry_s=retry_s), image=None,
                          env={"STAMPS": str(cluster.stamps)})


def test_agent_killed_and_restarted_within_the_lease_keeps_its_process_job(slow_fence_cluster: Cluster) -> None:
    cluster = slow_fence_cluster
    cluster.start_agent("a")
    job_id = _submit(cluster, 5, lines=20)
    cluster.wait_state(job_id, "running")
    time.sleep(0.5)
    cluster.kill_agent("a", signal.SIGKILL)  # the shim and its job go on without it
    cluster.start_agent("a")
    job = cluster.wait_final([job_id], 40)[job_id]
    assert job["state"] == "succeeded" and job["attempt"] == 1, job
    spans = stamps(cluster, job_id)
    assert list(spans) == [1] and spans[1][2], f"one attempt, run to its end: {spans}"
    out = cluster.logs(job_id)
    assert [f"line {i}" for i in range(20)] == [x for x in out.splitlines() if x.startswith("line")], out
    check_invariants(cluster)
    check_stamps(cluster, [job_id])
    wait_for("the shim's run dir to be removed", lambda: not cluster.shims(), 10)


def test_agent_killed_for_good_its_job_is_fenced_before_it_runs_elsewhere(process_cluster: Cluster) -> None:
    cluster = process_cluster
    cluster.start_agent("a")
    job_id = _submit(cluster, 60, retry_s=1)  # attempt 1 would run a minute: only the fence ends it
    cluster.wait_state(job_id, "running")
    cluster.start_agent("b")
    cluster.kill_agent("a", signal.SIGKILL)
    job = cluster.wait_final([job_id], 60)[job_id]
    assert job["state"] == "succeeded" and job["attempt"] == 2, job
    spans = stamps(cluster, job_id)
    assert sorted(spans) == [1, 2] and not spans[1][2] and spans[2][2], spans
    check_stamps(cluster, [job_id])  # attempt 1 was fenced by its shim before attempt 2 started
    attempts = cluster.attempts(job_id)
    assert [a["state"] for a in attempts] == ["lost", "succeeded"], attempts
    # The agent comes back: the fenced attempt's shim is offered, refused as stale, and removed.
    cluster.start_agent("a")
    wait_for("the stale shim of attempt 1 to be removed", lambda: not cluster.shims(), 15)
    check_invariants(cluster)


def test_embedded_server_stopped_and_restarted_keeps_five_running_jobs(tmp_path: Path) -> None:
    from tests.e2e.test_embedded import Server

    server = Server(tmp_path, None)
    ids = []
    for i in range(5):
        response = server.http.post("/v1/jobs", json={
            "name": f"keep-{i}", "project": "default", "resources": {"blocks": 10, "gpu_memory_mib": 1000},
            "command": ["sh", "-c", f"for i in $(seq 0 29); do echo line-{i}-$i; sleep 0.2; done"],
        })
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    wait_for("5 jobs running", lambda: all(server.http.get(f"/v1/jobs/{j}").json()["state"] == "running"
                                           for j in ids), 30)
    server.stop()  # SIGTERM: the jobs go on under their shims
    server = Server(tmp_path, None)
    try:
        final = {}

        def done() -> bool:
            for j in ids:
                job = server.http.get(f"/v1/jobs/{j}").json()
                if job["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
                    final[j] = job
            return len(final) == len(ids)

        wait_for("the 5 jobs to finish", done, 40, 0.2)
        assert {j["state"] for j in final.values()} == {"succeeded"}, final
        assert {j["attempt"] for j in final.values()} == {1}, final
        for i, j in enumerate(ids):
            out = server.http.get(f"/v1/jobs/{j}/logs").json()["stdout"]
            assert out.splitlines() == [f"line-{i}-{n}" for n in range(30)], out
    finally:
        server.stop()


def test_a_node_that_cannot_write_logs_is_drained_and_the_jobs_run_on_the_other(process_cluster: Cluster) -> None:
    cluster = process_cluster
    broken = cluster.start_agent("a", "h100-80gb:2")
    cluster.start_agent("b", "h100-80gb:2")
    logs = cluster.tmp / "agent-a" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logs.rename(logs.with_name("logs.away"))
    logs.write_text("not a directory")  # even root cannot make the attempts' log files now
    t0 = time.monotonic()
    ids = [_submit(cluster, 0.6) for _ in range(6)]
    wait_for("node a to be drained", lambda: cluster.node_status(broken) == "draining", 30)
    time.sleep(max(0.0, 10 - (time.monotonic() - t0)))  # unwritable for 10 s in all
    logs.unlink()
    logs.with_name("logs.away").rename(logs)
    final = cluster.wait_final(ids, 60)
    assert {j["state"] for j in final.values()} == {"succeeded"}, final
    nodes = {n["name"]: n for n in cluster.http.get("/v1/nodes").json()}
    assert nodes[broken]["status"] == "draining" and "launches failed by the node" in nodes[broken]["drain_reason"]
    assert "cannot write the attempt's logs" in nodes[broken]["drain_reason"]
    assert nodes[broken]["limits"] == "enforced" and nodes[broken]["runtimes"] == ["process"]
    audit = cluster.http.get("/v1/audit", params={"action": "node.drain"}).json()
    assert any(row["target"] == broken for row in audit["data"]), audit
    metrics = cluster.http.get("/metrics").text
    assert f'gpuq_node_drained{{node="{broken}"}} 1.0' in metrics
    check_invariants(cluster)
    check_stamps(cluster, ids)

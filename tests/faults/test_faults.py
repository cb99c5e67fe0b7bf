"""Fault tests: a real ``gpuq serve`` (PostgreSQL + Redis) and ``gpuq agent`` processes driving Docker.

Each test breaks one thing (an agent, a host, the broker, the service, the
Docker engine, a job) and ends with ``check_invariants``: every job final or
live with a lease, no slice held twice, finished jobs hold nothing, and
``docker ps`` by label matches the database.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.faults.checker import ContainerSpans, assert_no_leftovers, check_invariants
from tests.faults.cluster import LEASE_S, Cluster, free_port, wait_for
from tests.faults.conftest import make_cluster
from tests.faults.own_dockerd import OwnDockerd
from tests.services import missing
from workers.messages import LaunchSpec

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres]


def _container_of(cluster: Cluster, job_id: str):
    return wait_for(f"a container for {job_id}", lambda: cluster.containers(job_id=job_id, all=False), 20)[0]


# 1 ------------------------------------------------------------------------------------------
def test_agent_killed_mid_job_readopts_its_container_and_the_job_finishes_once(
        slow_fence_docker_cluster: Cluster) -> None:
    cluster = slow_fence_docker_cluster
    cluster.start_agent("a")
    job_id = cluster.submit(["sh", "-c", "echo start; sleep 4; echo done"],
                            resources={"gpus": 1, "cpus": 0.5, "memory_mib": 64})
    cluster.wait_state(job_id, "running")
    attrs = cluster.inspect(_container_of(cluster, job_id))
    # The container the agent made carries every limit and hardening option.
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["NetworkMode"] == "none" and not host["Privileged"] and host["Init"]
    assert host["Memory"] == 64 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] > 0
    assert not any("docker.sock" in m.get("Source", "") for m in attrs["Mounts"])

    cluster.kill_agent("a")  # kill -9: no goodbye, the container keeps running
    time.sleep(0.5)
    assert cluster.containers(job_id=job_id, all=False), "the container must outlive its agent"
    cluster.start_agent("a")  # well within the lease: the node never goes down
    job = cluster.wait_final([job_id], 30)[job_id]
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 1, "re-adopted, not re-run"
    assert [a["state"] for a in cluster.attempts(job_id)] == ["succeeded"]
    assert cluster.logs(job_id).count("done") == 1
    check_invariants(cluster)
    assert_no_leftovers(cluster)


# 2 ------------------------------------------------------------------------------------------
def test_host_lost_for_good_requeues_elsewhere_and_refuses_the_old_attempt(cluster: Cluster) -> None:
    nodes = {cluster.start_agent("a"): "a", cluster.start_agent("b"): "b"}
    # The first attempt outlives the test's kill (a loaded box may take seconds to get there); the second is short.
    job_id = cluster.submit(["sh", "-c", 'if [ "$GPUQ_ATTEMPT" = 1 ]; then sleep 60; else sleep 2; fi; echo ok'])
    first = cluster.wait_state(job_id, "running")
    dead_node = first["allocation"][0]["node"]
    # "running" is the start claim, which comes before the container: wait for the container itself.
    wait_for("the first attempt's container to run", lambda: cluster.containers(node=dead_node, all=False), 30)
    # The host dies: its agent and its containers with it.
    cluster.kill_agent(nodes[dead_node])
    for container in cluster.containers(node=dead_node, all=False):
        cluster.docker.api.kill(container["Id"])
    t0 = time.monotonic()
    job = cluster.wait_final([job_id], 40)[job_id]
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 2, job
    attempts = cluster.attempts(job_id)
    assert [a["state"] for a in attempts] == ["lost", "succeeded"], attempts
    assert "lease expired" in attempts[0]["reason"]
    assert time.monotonic() - t0 < LEASE_S + 15
    assert cluster.node_status(dead_node) == "down"
    # The old attempt's late reports are refused.
    ref = {"node_name": dead_node, "job_id": job_id, "attempt": 1, "replica": 0}
    assert cluster.agent_request("/v1/agent/exited", ref | {"exit_code": 0, "reason": "exited"}).status_code == 409
    assert cluster.agent_request("/v1/agent/started", ref).status_code == 409
    # The host comes back: its stale container (exited) is found by label and removed, the node is ready again.
    assert cluster.containers(node=dead_node, all=True)
    cluster.start_agent(nodes[dead_node])
    wait_for("the stale container to be removed", lambda: not cluster.containers(node=dead_node, all=True), 15)
    check_invariants(cluster)
    assert_no_leftovers(cluster)


def test_agent_killed_for_good_its_container_is_fenced_before_the_job_runs_elsewhere(
        tmp_path: Path, pg_url: str, redis_url: str, docker_client) -> None:
    """kill -9 of a Docker agent, left dead past the lease: the container's watchdog stops it before the
    service requeues the job, so the engine's own start/finish times show no two attempts alive at once.

    A 12 s lease (the watchdog fences after 6 s): a loaded box must not fence the live agent first."""
    cluster = make_cluster(tmp_path, pg_url, redis_url, docker_client, lease_s=12.0)
    try:
        nodes = {cluster.start_agent("a"): "a", cluster.start_agent("b"): "b"}
        job_id = cluster.submit(["sh", "-c", 'if [ "$GPUQ_ATTEMPT" = 1 ]; then sleep 60; else sleep 3; fi; echo done'])
        first_node = cluster.wait_state(job_id, "running")["allocation"][0]["node"]
        spans = ContainerSpans(cluster, job_id)
        spans.poll()
        first = _container_of(cluster, job_id)
        cluster.kill_agent(nodes[first_node])  # kill -9; its container would run for a minute without a fence
        job = spans.until_final(90)
        assert job["state"] == "succeeded" and job["attempt"] == 2, job
        spans.check()
        assert sorted(spans.spans) == [1, 2], spans.spans
        state = cluster.inspect(first)["State"]
        assert not state["Running"] and state["ExitCode"] in (137, 143), state  # stopped, not run to its end
        assert (tmp_path / f"agent-{nodes[first_node]}" / "watchdogs" / first["Id"] / "fenced.json").exists()
        assert [a["state"] for a in cluster.attempts(job_id)] == ["lost", "succeeded"]
        # The agent comes back: the fenced container is offered, refused as stale, and removed.
        cluster.start_agent(nodes[first_node])
        wait_for("the fenced container to be removed", lambda: not cluster.containers(job_id=job_id, all=True), 15)
        check_invariants(cluster)
        assert_no_leftovers(cluster)
    finally:
        cluster.close()


def test_agent_cut_off_from_the_service_stops_its_job_before_the_lease_runs_out(cluster: Cluster) -> None:
    cluster.start_agent("a")
    job_id = cluster.submit(["sh", "-c", "sleep 5; echo ok"])
    cluster.wait_state(job_id, "running")
    container = _container_of(cluster, job_id)
    cluster.service.send_signal(signal.SIGSTOP)  # the service (not the database) stops answering
    try:
        wait_for("the agent to stop its job",
                 lambda: not cluster.inspect(container)["State"]["Running"], LEASE_S + 5)
        with cluster.engine.connect() as conn:
            lease_end = conn.execute(text("SELECT lease_expires_at FROM nodes WHERE name = :n"),
                                     {"n": cluster.node("a")}).scalar()
        finished = cluster.inspect(container)["State"]["FinishedAt"]
    finally:
        cluster.service.send_signal(signal.SIGCONT)
    from datetime import datetime

    finished_at = datetime.fromisoformat(finished[:26].rstrip("Z"))
    assert finished_at < lease_end, f"stopped at {finished_at}, lease ran until {lease_end}"
    job = cluster.wait_final([job_id], 40)[job_id]
    assert job["state"] == "succeeded" and job["attempt"] == 2, job
    attempts = cluster.attempts(job_id)
    assert attempts[0]["state"] == "lost", attempts
    check_invariants(cluster)
    assert_no_leftovers(cluster)


# 3 ------------------------------------------------------------------------------------------
def test_duplicate_launch_messages_make_one_container(cluster: Cluster) -> None:
    from queue_service.dispatch import Dispatcher, make_broker

    node = cluster.start_agent("a")
    job_id = cluster.submit(["sh", "-c", "sleep 2; echo ok"])
    cluster.wait_state(job_id, "running")
    spec = LaunchSpec(job_id=job_id, attempt=1, node_name=node, command=["sh", "-c", "sleep 2; echo ok"],
                      image=cluster.image, gpu_uuids=[])
    dispatcher = Dispatcher(make_broker(cluster.redis_url))
    for _ in range(3):
        assert dispatcher.launch(spec)
    time.sleep(1.0)
    assert len(cluster.containers(job_id=job_id, all=True)) == 1
    job = cluster.wait_final([job_id], 30)[job_id]
    assert job["state"] == "succeeded" and job["attempt"] == 1
    # A duplicate delivered after the end starts nothing either (the claim is refused).
    dispatcher.launch(spec)
    time.sleep(1.0)
    assert cluster.containers(job_id=job_id, all=True) == []
    assert len(cluster.attempts(job_id)) == 1
    dispatcher.broker.close()
    check_invariants(cluster)
    assert_no_leftovers(cluster)


# 4 ------------------------------------------------------------------------------------------
@pytest.fixture
def private_redis(tmp_path: Path):
    """A redis-server of this test's own, so it can be killed and restarted without touching anyone else's."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("Redis", "no redis-server binary to run a private server")
    port = free_port()

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        wait_for("private redis", lambda: _ping(redis, port), 10)
        return proc

    state = {"proc": start()}
    yield f"redis://127.0.0.1:{port}/0", state, start
    state["proc"].kill()
    state["proc"].wait()


def _ping(redis, port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def test_redis_flushed_and_restarted_mid_run_loses_no_job(tmp_path, pg_url, docker_client, private_redis) -> None:
    import redis

    url, state, start = private_redis
    cluster = make_cluster(tmp_path, pg_url, url, docker_client)
    try:
        cluster.start_agent("a", "h100-80gb:2")
        ids = [cluster.submit(["sh", "-c", "sleep 0.3"]) for _ in range(8)]
        wait_for("two jobs running", lambda: sum(cluster.job(i)["state"] == "running" for i in ids) >= 1, 20)
        redis.Redis.from_url(url).flushall()  # every queued launch message is gone
        time.sleep(1.0)
        state["proc"].kill()  # and then the broker itself: kill -9, restart empty
        state["proc"].wait()
        time.sleep(1.0)
        state["proc"] = start()
        jobs = cluster.wait_final(ids, 60)
        assert {j["state"] for j in jobs.values()} == {"succeeded"}, [(j["id"], j["reason"]) for j in jobs.values()]
        check_invariants(cluster)
        assert_no_leftovers(cluster)
    finally:
        cluster.close()


# 5 ------------------------------------------------------------------------------------------
def test_service_restarted_mid_admission_leaves_no_half_admitted_gang(cluster: Cluster) -> None:
    cluster.start_agent("a", "h100-80gb:2")
    cluster.start_agent("b", "h100-80gb:2")
    ids = []
    for round_ in range(2):
        ids += [cluster.submit(["sh", "-c", "sleep 0.3"], resources={"gpus": 1, "replicas": 3}) for _ in range(3)]
        time.sleep(0.05 + 0.1 * round_)
        cluster.kill_service()  # kill -9 while the admitter works through the gangs
        with cluster.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT j.id, j.replicas, j.attempt, count(DISTINCT a.replica) AS members FROM jobs j "
                "JOIN allocations a ON a.job_id = j.id AND a.attempt = j.attempt GROUP BY j.id, j.replicas, j.attempt"
            )).all()
        half = [(r.id, r.members, r.replicas) for r in rows if r.members != r.replicas]
        assert not half, f"half-admitted gangs: {half}"
        cluster.start_service()
    jobs = cluster.wait_final(ids, 90)
    assert {j["state"] for j in jobs.values()} == {"succeeded"}, [(j["id"], j["reason"]) for j in jobs.values()]
    check_invariants(cluster)
    assert_no_leftovers(cluster)


# 6 ------------------------------------------------------------------------------------------
def test_oom_and_time_limit_end_with_their_reason_and_free_the_gpu_at_once(cluster: Cluster) -> None:
    cluster.start_agent("a")
    oom = cluster.submit(["sh", "-c", "head -c 300m /dev/zero | tail > /dev/null"],
                         resources={"gpus": 1, "memory_mib": 32})
    slow = cluster.submit(["sleep", "60"], time_limit_s=2)
    after = cluster.submit(["true"])
    jobs = cluster.wait_final([oom, slow, after], 40)
    assert jobs[oom]["state"] == "failed" and "out of memory" in jobs[oom]["reason"], jobs[oom]
    assert jobs[slow]["state"] == "timed_out" and "time limit of 2 s" in jobs[slow]["reason"], jobs[slow]
    assert jobs[after]["state"] == "succeeded"
    for job_id in (oom, slow):
        assert len(cluster.attempts(job_id)) == 1, "no retry of the job's own failure"
    with cluster.engine.connect() as conn:
        gap = conn.execute(text(
            "SELECT (SELECT min(started_at) FROM attempts WHERE job_id = :a) - "
            "(SELECT max(released_at) FROM allocations WHERE job_id = :s)"), {"a": after, "s": slow}).scalar()
    assert gap.total_seconds() < 3, f"the next job started {gap} after the GPU was freed"
    check_invariants(cluster)
    assert_no_leftovers(cluster)


# 7 ------------------------------------------------------------------------------------------
def test_docker_daemon_restart_with_a_running_job(tmp_path: Path, pg_url: str, redis_url: str, monkeypatch) -> None:
    """The engine restarted under a running job: lost, then run again. The engine is the test's own
    (``OwnDockerd``: its socket, data root, pid file); the host's dockerd is never signalled."""
    engine = OwnDockerd.start_or_skip()
    try:
        monkeypatch.setenv("DOCKER_HOST", engine.host)  # the agents the cluster starts use this engine
        client = engine.client()
        cluster = make_cluster(tmp_path, pg_url, redis_url, client)
        try:
            cluster.start_agent("a")
            job_id = cluster.submit(["sh", "-c", "sleep 6; echo ok"])
            cluster.wait_state(job_id, "running")
            _container_of(cluster, job_id)
            engine.restart()
            job = cluster.wait_final([job_id], 60)[job_id]
            assert job["state"] == "succeeded", job
            attempts = cluster.attempts(job_id)
            assert [a["state"] for a in attempts] == ["lost", "succeeded"], attempts
            assert "engine restarted" in attempts[0]["reason"], attempts[0]
            check_invariants(cluster)
            assert_no_leftovers(cluster)
        finally:
            cluster.close()
            client.close()
    finally:
        engine.stop()


# 8 ------------------------------------------------------------------------------------------
def test_bad_image_fails_fast_frees_the_gpu_and_is_not_retried(cluster: Cluster) -> None:
    cluster.start_agent("a")
    t0 = time.monotonic()
    bad = cluster.submit(["true"], image="gpuq-no-such-image:latest")
    after = cluster.submit(["true"])
    jobs = cluster.wait_final([bad, after], 30)
    assert time.monotonic() - t0 < 15
    assert jobs[bad]["state"] == "failed" and "could not start" in jobs[bad]["reason"], jobs[bad]
    assert "gpuq-no-such-image" in jobs[bad]["reason"]
    assert jobs[after]["state"] == "succeeded"
    time.sleep(2.5)  # longer than the re-send interval: nothing is tried again
    assert len(cluster.attempts(bad)) == 1 and cluster.job(bad)["state"] == "failed"
    check_invariants(cluster)
    assert_no_leftovers(cluster)

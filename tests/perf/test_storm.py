"""The submit storm: 20 clients submitting one job per request while jobs run, on SQLite and on PostgreSQL.

Before: on the embedded SQLite default such a storm answered 500s ("database
is locked", pool timeouts), hung requests for 60 s, and the server's own
local agent decided it had lost contact and killed the running jobs.
Generous bounds (a shared CI machine): no 5xx, no request over 10 s, no
running job stopped, every job final or live afterwards. Speed is the
benchmark's business (``benchmarks/api_bench.py``), not this test's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import httpx

from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings

CLIENTS = 20
SUBMITS = 10  # per client
RUNNING = 2  # jobs holding the node's GPUs during the storm
LIVE = {"queued", "admitted", "running"}
FINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(http: httpx.Client, ids: list[str], states: set[str], timeout_s: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {j: http.get(f"/v1/jobs/{j}").json()["state"] for j in ids}
        if all(s in states for s in seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_submit_storm_with_jobs_running(db_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GPUQ_JOB_WORK_DIR", str(tmp_path / "work"))
    settings = Settings(data_dir=tmp_path / "data", port=free_port(), database_url=db_url, runtime="process",
                        simulate_gpus=f"h100-80gb:{RUNNING}", node_name="storm", node_lease_s=10,
                        heartbeat_interval_s=1.0)
    server = EmbeddedServer(settings).start()
    try:
        token = (settings.data_dir / "admin.token").read_text().strip()
        url = f"http://127.0.0.1:{settings.port}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            holders = [http.post("/v1/jobs", json={"name": f"hold-{i}", "command": ["sleep", "300"],
                                                   "resources": {"gpus": 1}}).json()["id"] for i in range(RUNNING)]
            assert set(wait_for(http, holders, {"running"}).values()) == {"running"}
        pids = {j: _pid_of(server, j) for j in holders}

        latencies: list[float] = []
        statuses: list[int] = []
        ids: list[str] = []
        cpu_jobs: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                for i in range(SUBMITS):
                    # every fifth job runs at once (CPU only, backfilled: it has a time limit) and ends, so exits
                    # are reported under the storm too
                    body = ({"command": ["true"], "resources": {"gpus": 0}, "time_limit_s": 60} if i % 5 == 0
                            else {"command": ["true"], "resources": {"gpus": 1}})
                    started = time.perf_counter()
                    try:
                        r = http.post("/v1/jobs", json={**body, "name": f"storm-{k}-{i}"})
                        status, job_id = r.status_code, r.json().get("id") if r.status_code == 201 else None
                    except httpx.HTTPError:
                        status, job_id = 0, None
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        statuses.append(status)
                        if job_id:
                            ids.append(job_id)
                            if i % 5 == 0:
                                cpu_jobs.append(job_id)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert [s for s in statuses if s >= 500 or s == 0] == [], "no 5xx, no dropped request"
        assert statuses.count(201) == CLIENTS * SUBMITS
        assert max(latencies) < 10.0, f"slowest submit {max(latencies):.1f} s"
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            ended = wait_for(http, cpu_jobs, FINAL)
            assert set(ended.values()) == {"succeeded"}, ended
            after = {j: http.get(f"/v1/jobs/{j}").json()["state"] for j in ids}
            assert set(after.values()) <= LIVE | FINAL
            held = {j: http.get(f"/v1/jobs/{j}").json()["state"] for j in holders}
        assert held == dict.fromkeys(holders, "running"), "no running job was stopped by the storm"
        for job_id, pid in pids.items():
            assert pid is None or _alive(pid), f"the process of running job {job_id} is gone"
        assert server.local_agent is not None and server.local_agent.agent.fences == 0
    finally:
        server.stop(stop_jobs=True)


def _pid_of(server: EmbeddedServer, job_id: str) -> int | None:
    assert server.local_agent is not None
    for run in server.local_agent.agent.book.runs():
        if run.spec.job_id == job_id:
            return getattr(run.handle, "pid", None)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

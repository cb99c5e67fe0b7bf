"""Nothing a job forked outlives it: a ``setsid nohup sleep 1000`` daemon dies on cancel and on the time limit.

(Its death when the job ends by itself, and on a runtime stop, is in ``test_cgroups.py``.) A real
``gpuq serve`` whose local agent runs host processes in cgroups.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.e2e.test_embedded import Server
from tests.isolation.conftest import alive, need


def _daemon_job(pidfile: Path) -> list[str]:
    return ["sh", "-c", f"setsid nohup sleep 1000 >/dev/null 2>&1 & echo $! > {pidfile}; sleep 60"]


def _wait(what: str, check, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_daemons_die_on_cancel_and_on_the_time_limit(work_root: Path) -> None:
    need(os.geteuid() == 0, "needs root (cgroups)")
    shared = work_root / "pids"
    shared.mkdir()
    shared.chmod(0o777)  # the jobs' uids write their daemons' pids here
    server = Server(work_root, None, extra_env={"GPUQ_JOB_WORK_DIR": str(work_root / "jobs")})
    try:
        nodes = server.http.get("/v1/nodes").json()
        assert nodes[0]["limits"] == "enforced", nodes
        cancel_pid, limit_pid = shared / "cancel.pid", shared / "limit.pid"
        cancelled = server.http.post("/v1/jobs", json={
            "name": "cancel-me", "project": "default", "resources": {"gpus": 1},
            "command": _daemon_job(cancel_pid)}).json()["id"]
        limited = server.http.post("/v1/jobs", json={
            "name": "time-limit", "project": "default", "resources": {"gpus": 1}, "time_limit_s": 2,
            "command": _daemon_job(limit_pid)}).json()["id"]
        daemons = [int(_wait(f"{p.name}", lambda p=p: p.exists() and p.read_text().strip())) for p in
                   (cancel_pid, limit_pid)]
        assert all(alive(pid) for pid in daemons)
        assert server.http.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200

        def state(job_id: str) -> str:
            return server.http.get(f"/v1/jobs/{job_id}").json()["state"]

        _wait("the cancel", lambda: state(cancelled) == "cancelled")
        _wait("the time limit", lambda: state(limited) == "timed_out")
        _wait("both daemons to be gone", lambda: not any(alive(pid) for pid in daemons), 10)
    finally:
        server.stop()

"""End to end: a real ``gpuq serve`` process, simulated GPUs, an oversubscribed mix of jobs.

Checks that every job finishes, that no GPU was ever over-allocated at any
instant (from the allocation intervals in the database), and that each job
saw exactly its limits in its environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]
GPUS = "h100-80gb:2,a100-40gb:1"
MEMORY_MIB = {"h100-80gb": 81559, "a100-40gb": 40960}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, database_url: str | None, *, gpus: str = GPUS,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'gpuq.db'}"
        cmd = [sys.executable, "-m", "queue_service.cli", "serve", "--port", str(self.port), "--data-dir",
               str(self.data_dir), "--simulate-gpus", gpus, "--node-name", "e2e-node"]
        if database_url:
            cmd += ["--database-url", database_url]
        self.log = open(tmp / "serve.log", "w")  # noqa: SIM115 - the server's stdout until stop() closes it
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")} | (extra_env or {})
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/health").json()["nodes_ready"] >= 1:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"gpuq serve exited: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.2)
        else:
            raise AssertionError("gpuq serve did not become ready")
        token_file = self.data_dir / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600, "the admin token file must be private"
        token = token_file.read_text().strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path: Path):
    database_url = None
    if request.param == "postgres":
        from tests.conftest import _postgres_database

        gen = _postgres_database()
        database_url = next(gen).replace("postgresql+psycopg://", "postgresql://")
    srv = Server(tmp_path, database_url)
    try:
        yield srv
    finally:
        srv.stop()
        if request.param == "postgres":
            gen.close()


PRINT_ENV = "env | grep -E '^(CUDA_|GPUQ_JOB_ID)' | sort; sleep 0.3"


def test_oversubscribed_mix_finishes_within_limits(server: Server) -> None:
    jobs = []
    # 4 whole-GPU jobs and 10 block jobs on 3 simulated GPUs: far more than fits at once.
    for i in range(4):
        jobs.append({"name": f"whole-{i}", "command": ["sh", "-c", PRINT_ENV], "resources": {"gpus": 1}})
    for i in range(10):
        jobs.append({"name": f"share-{i}", "command": ["sh", "-c", PRINT_ENV],
                     "resources": {"blocks": 30 + 5 * (i % 3), "gpu_memory_mib": 20000 + 1000 * i}})
    jobs.append({"name": "pair", "command": ["sh", "-c", PRINT_ENV],
                 "resources": {"gpus": 2, "gpu_models": ["h100-80gb"]}})
    jobs.append({"name": "cpu", "command": ["sh", "-c", PRINT_ENV], "resources": {"gpus": 0}})
    ids = []
    for body in jobs:
        response = server.http.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    deadline = time.monotonic() + 120
    final: dict[str, dict] = {}
    while time.monotonic() < deadline and len(final) < len(ids):
        for job_id in ids:
            if job_id not in final:
                job = server.http.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
                    final[job_id] = job
        time.sleep(0.2)
    assert len(final) == len(ids), f"jobs still unfinished: {set(ids) - set(final)}"
    assert {j["state"] for j in final.values()} == {"succeeded"}, [(j["name"], j["reason"]) for j in final.values()]

    # Every job saw exactly its allocation in its environment.
    for job_id, job in final.items():
        out = server.http.get(f"/v1/jobs/{job_id}/logs").json()["stdout"]
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert env["GPUQ_JOB_ID"] == job_id
        uuids = [a["gpu_uuid"] for a in job["allocation"] if a["gpu_uuid"]]
        assert env.get("CUDA_VISIBLE_DEVICES", "") == ",".join(uuids), job["name"]
        if job["resources"]["blocks"]:
            assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == str(job["resources"]["blocks"])
            assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={job['resources']['gpu_memory_mib']}M"
        else:
            assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env
        if job["name"] == "cpu":
            assert uuids == [] and env.get("CUDA_VISIBLE_DEVICES", "") == ""
        if job["name"] == "pair":
            assert len(set(uuids)) == 2

    # No GPU was over-allocated at any instant: replay the allocation intervals.
    engine = create_engine(server.database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.gpu_uuid, a.kind, a.blocks, a.gpu_memory_mib, a.created_at, a.released_at, g.model "
            "FROM allocations a JOIN gpus g ON g.uuid = a.gpu_uuid"
        )).all()
        live = conn.execute(text("SELECT count(*) FROM allocations WHERE released_at IS NULL")).scalar()
    engine.dispose()
    assert live == 0, "finished jobs must hold nothing"
    events: dict[str, list] = defaultdict(list)
    for uuid, kind, blocks, mem, start, end, model in rows:
        assert end is not None and end >= start
        whole = kind == "gpu"
        events[uuid].append((start, 1, whole, blocks, mem, model))
        events[uuid].append((end, -1, whole, blocks, mem, model))
    assert len(events) == 3, "every simulated GPU should have been used"
    for uuid, evs in events.items():
        whole_held = used_blocks = used_mem = 0
        for _at, sign, whole, blocks, mem, model in sorted(evs, key=lambda e: (e[0], e[1])):  # releases first
            if whole:
                whole_held += sign
            else:
                used_blocks += sign * blocks
                used_mem += sign * mem
            assert whole_held <= 1 and used_blocks <= 100 and used_mem <= MEMORY_MIB[model], uuid
            assert not (whole_held and used_blocks), f"{uuid} held whole and shared at once"


def test_cli_tour(server: Server, tmp_path: Path) -> None:
    """The README's CLI commands work against a live server and print human output."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")},
           "GPUQ_SERVER_URL": server.url, "GPUQ_DATA_DIR": str(server.data_dir)}

    def gpuq(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "queue_service.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)

    made = gpuq("submit", "--blocks", "25", "--gpu-memory", "10GiB", "--time-limit", "60", "--json", "--",
                "sh", "-c", "echo out; echo err >&2")
    assert made.returncode == 0, made.stderr
    import json

    job_id = json.loads(made.stdout)["id"]
    followed = gpuq("logs", job_id, "--follow")
    assert followed.returncode == 0 and "out" in followed.stdout and "err" in followed.stderr
    shown = gpuq("show", job_id)
    assert "state: succeeded" in shown.stdout and "25 blocks, 10240 MiB" in shown.stdout
    # The timeline: every transition in order, by whom.
    timeline = shown.stdout.split("timeline:", 1)[1]
    moves = ["new -> queued", "queued -> admitted", "admitted -> running", "running -> succeeded"]
    assert [timeline.index(m) for m in moves] == sorted(timeline.index(m) for m in moves), timeline
    assert "by agent:" in timeline and "by admitter" in timeline
    listed = gpuq("jobs", "--all")  # finished jobs too (plain `gpuq jobs` lists the live ones)
    assert job_id in listed.stdout
    bad = gpuq("submit", "--blocks", "0", "--gpu-memory", "1GiB", "--", "true")
    assert bad.returncode != 0 and "resources.blocks" in bad.stderr and "Traceback" not in bad.stderr
    sleeper = json.loads(gpuq("submit", "--gpus", "1", "--json", "--", "sleep", "60").stdout)["id"]
    cancelled = gpuq("cancel", sleeper)
    assert cancelled.returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.http.get(f"/v1/jobs/{sleeper}").json()["state"] == "cancelled":
            break
        time.sleep(0.2)
    assert server.http.get(f"/v1/jobs/{sleeper}").json()["state"] == "cancelled"
    token = gpuq("admin", "project", "create", "vision")
    assert token.returncode == 0, token.stderr
    member = gpuq("admin", "token", "create", "--role", "member", "--project", "vision")
    assert member.returncode == 0 and member.stdout.strip().startswith("gpuq_")
    unknown = gpuq("show", "does-not-exist")
    assert unknown.returncode != 0 and "404" in unknown.stderr


def _wait_final(server: Server, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = server.http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_final_states_and_immediate_release(server: Server) -> None:
    def submit(command: list[str], **extra) -> str:
        body = {"command": command, "resources": {"gpus": 3 if extra.pop("all", False) else 1}, **extra}
        response = server.http.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    timed = submit(["sh", "-c", "trap 'echo got TERM; exit 143' TERM; sleep 30 & wait"], time_limit_s=1,
                   resources={"gpus": 1})
    failing = submit(["sh", "-c", "echo bad >&2; exit 3"])
    missing = submit(["/nonexistent/binary"])
    job = _wait_final(server, timed)
    assert job["state"] == "timed_out" and "time limit" in job["reason"]
    assert "got TERM" in server.http.get(f"/v1/jobs/{timed}/logs").json()["stdout"], "SIGTERM comes before SIGKILL"
    job = _wait_final(server, failing)
    assert job["state"] == "failed" and job["exit_code"] == 3 and "code 3" in job["reason"]
    assert "bad" in server.http.get(f"/v1/jobs/{failing}/logs").json()["stderr"]
    job = _wait_final(server, missing)
    assert job["state"] == "failed" and "could not start" in job["reason"]

    # A job holding every GPU, then one waiting behind it: the second starts right after the first ends.
    first = server.http.post("/v1/jobs", json={"command": ["sleep", "1"], "resources": {"gpus": 1},
                                                 "name": "first"}).json()["id"]
    hog = [server.http.post("/v1/jobs", json={"command": ["sleep", "1"], "resources": {"gpus": 1}}).json()["id"]
           for _ in range(2)]
    waiting = server.http.post("/v1/jobs", json={"command": ["true"], "resources": {"gpus": 1}}).json()
    time.sleep(0.3)
    assert server.http.get(f"/v1/jobs/{waiting['id']}").json()["state"] == "queued"
    assert server.http.get(f"/v1/jobs/{waiting['id']}").json()["reason"]
    ends = [_wait_final(server, j) for j in [first, *hog]]
    started = _wait_final(server, waiting["id"])
    from datetime import datetime

    first_end = min(datetime.fromisoformat(j["finished_at"]) for j in ends)
    gap_s = (datetime.fromisoformat(started["started_at"]) - first_end).total_seconds()
    assert 0 <= gap_s < 5, f"the waiting job started {gap_s:.2f} s after capacity freed"


def test_container_job_on_simulated_gpus(server: Server) -> None:
    """A job with an image runs in Docker with the same limits in its environment."""
    from tests.services import require_docker

    image = require_docker()
    body = {"name": "in-docker", "image": image, "command": ["sh", "-c", "env | sort; id -u"],
            "resources": {"blocks": 40, "gpu_memory_mib": 8192, "cpus": 0.5, "memory_mib": 256}}
    job_id = server.http.post("/v1/jobs", json=body).json()["id"]
    job = _wait_final(server, job_id, timeout_s=90)
    assert job["state"] == "succeeded", job["reason"]
    out = server.http.get(f"/v1/jobs/{job_id}/logs").json()["stdout"]
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE") == "40", out
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=8192M"
    assert env["CUDA_VISIBLE_DEVICES"] == job["allocation"][0]["gpu_uuid"]
    assert env["GPUQ_JOB_ID"] == job_id

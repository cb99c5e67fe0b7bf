"""``gpuq serve --api-processes N``: a real server of several processes on one port (PostgreSQL + Redis).

Connections land on every API process; admission runs in one more process that serves no requests and
leads; a replica or the admitter that dies is started again while the others serve; jobs submitted
through all of them run once each; SIGTERM stops every process. SQLite and the in-process broker are
refused with a message, not a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from queue_service.db import locks
from tests.e2e.test_embedded import REPO, free_port
from tests.services import require_postgres, require_redis

PROCESSES = 2


def _children(pid: int) -> list[int]:
    """The replica and admitter processes of server ``pid`` (its direct children running Python's spawn
    entry point)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:  # not its resource tracker
            out.append(int(entry.name))
    return sorted(out)


def _serving(pids: list[int], port: int) -> set[int]:
    """Which of ``pids`` hold an established connection on local ``port`` (from /proc/net/tcp and their fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            found.add(pid)
    return found


def _leader(database_url: str) -> int | None:
    """The pid of the process whose connection holds the admitter's leader lock (``db.locks.LEADER``: an
    ``int8`` advisory key, in ``pg_locks`` as classid, objid), from the connection's application name."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            name = conn.execute(text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND (l.classid::bigint << 32) + l.objid::bigint = :key"), {"key": locks.LEADER}).scalar()
    finally:
        engine.dispose()
    return int(name.rsplit("-", 1)[1]) if name else None


@pytest.fixture
def server(tmp_path: Path):
    require_postgres()
    redis_url = require_redis()
    from tests.conftest import _postgres_database

    gen = _postgres_database()
    database_url = next(gen).replace("postgresql+psycopg://", "postgresql://")
    port = free_port()
    data_dir = tmp_path / "data"
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "queue_service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--database-url", database_url, "--broker-url", redis_url, "--local-agent",
         "--simulate-gpus", "h100-80gb:4", "--node-name", f"mp-{port}", "--api-processes", str(PROCESSES)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            if len(_children(proc.pid)) == PROCESSES and "API processes: 2" in (tmp_path / "serve.log").read_text():
                try:
                    if httpx.get(f"{url}/v1/health").json()["nodes_ready"] >= 1:
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
            time.sleep(0.2)
        else:
            raise AssertionError("gpuq serve --api-processes did not come up: " + (tmp_path / "serve.log").read_text())
        token = (data_dir / "admin.token").read_text().strip()
        yield proc, port, url, token, database_url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        gen.close()


def _replicas_up(proc: subprocess.Popen, port: int, database_url: str, *,
                 replaced: int | None = None) -> tuple[list[int], int]:
    """Wait until the replicas are up (a new pid when ``replaced``), every API process answers on the port
    and the admitter process leads; returns the API replicas and the admitter."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        every = _children(proc.pid)
        admitter = _leader(database_url)
        kids = [pid for pid in every if pid != admitter]
        if len(every) == PROCESSES and replaced not in every and admitter in every:
            clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) for _ in range(24)]
            try:
                for client in clients:  # each its own kept-alive connection
                    client.get("/v1/health")
                if _serving([proc.pid, *every], port) == {proc.pid, *kids}:  # the admitter serves nothing
                    assert admitter is not None
                    return kids, admitter
            except httpx.HTTPError:
                pass
            finally:
                for client in clients:
                    client.close()
        time.sleep(0.3)
    raise AssertionError("the replica did not come (back) up and serve")


def test_several_processes_serve_one_port_and_run_each_job_once(server) -> None:
    proc, port, url, token, database_url = server
    first, admitter = _replicas_up(proc, port, database_url)  # connections land on every API process
    # a replica killed outright: the first process goes on serving, the supervisor starts a new one
    os.kill(first[0], signal.SIGKILL)
    assert httpx.get(f"{url}/v1/health", timeout=10).status_code == 200
    second, same_admitter = _replicas_up(proc, port, database_url, replaced=first[0])
    assert second != first and same_admitter == admitter
    # the admitter killed outright: a new one is started and takes the lead (the jobs below run)
    os.kill(admitter, signal.SIGKILL)
    _third, new_admitter = _replicas_up(proc, port, database_url, replaced=admitter)
    assert new_admitter != admitter

    def submit(i: int) -> int:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            body = {"name": f"j{i}", "project": "default", "command": ["sleep", "0.2"],
                    "resources": {"blocks": 20, "gpu_memory_mib": 1024} if i % 2 else {"gpus": 1}}
            return client.post("/v1/jobs", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(submit, range(24)))
    assert codes == [201] * 24
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                states = dict(conn.execute(text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
            if states.get("succeeded", 0) == 24:
                break
            time.sleep(0.5)
        assert states == {"succeeded": 24}, states
        with engine.connect() as conn:
            # one admission and one start per job, whichever process admitted it
            runs = conn.execute(text("SELECT job_id, count(*) FROM job_events WHERE to_state = 'running' "
                                     "GROUP BY job_id")).all()
            attempts = conn.execute(text("SELECT max(attempt) FROM jobs")).scalar()
    finally:
        engine.dispose()
    assert len(runs) == 24 and {n for _, n in runs} == {1} and attempts == 1
    proc.terminate()
    assert proc.wait(timeout=40) == 0
    assert _children(proc.pid) == []


@pytest.mark.parametrize(("extra", "says"), [
    ((), "needs PostgreSQL"),
    (("--database-url", "postgresql://nobody@127.0.0.1:1/none"), "needs a shared broker"),
])
def test_what_cannot_run_several_processes_is_refused_with_a_message(tmp_path: Path, extra, says) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "queue_service.cli", "serve", "--port", str(free_port()), "--data-dir",
         str(tmp_path / "data"), "--api-processes", "2", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")})
    assert out.returncode != 0 and says in out.stderr + out.stdout, out.stderr
    assert "Traceback" not in out.stderr

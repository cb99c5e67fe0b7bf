"""A real multi-host-shaped gpuq for fault tests: ``gpuq serve`` on PostgreSQL + Redis, ``gpuq agent`` processes
with the Docker runtime and simulated GPUs, each a subprocess the test can kill.

Timings are short so a fault plays out in seconds: a 6 s lease (agents
self-fence after 3 s of silence), 0.5 s heartbeats and admission ticks, and
launches re-sent after 2 s. Everything a test makes is labelled with its own
node names and removed at the end; Redis traffic goes to one database
number (``FAULTS_REDIS_DB``), flushed before and after.

No process outlives an interrupted run: ``gpuq serve`` and every agent run
in a process group of their own that dies with pytest (``PR_SET_PDEATHSIG``,
even on SIGKILL), and every live cluster is closed at exit and on SIGTERM
(``_close_all``), which kills those groups and removes the containers and shims.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text

from tests.services import REDIS_DB

REPO = Path(__file__).resolve().parents[2]
FINAL = ("succeeded", "failed", "cancelled", "timed_out")
LEASE_S = 6.0
FAULTS_REDIS_DB = REDIS_DB - 1  # this xdist worker's second database (tests/services.py)


_LIVE: weakref.WeakSet[Cluster] = weakref.WeakSet()  # clusters not closed yet (closed at exit / SIGTERM)
PR_SET_PDEATHSIG = 1


def _die_with_pytest() -> None:
    """In the child before exec: SIGKILL it when pytest dies, however (cleared again for its own children)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """A harness process: its own process group (``close`` kills the group), dying with pytest."""
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_pytest, **kwargs)


def _close_all() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):  # teardown goes on whatever failed
            cluster.close()


def _on_sigterm(signum: int, _frame: object) -> None:
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_finalizers() -> None:
    if getattr(_install_finalizers, "done", False):
        return
    _install_finalizers.done = True  # type: ignore[attr-defined]
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


class Cluster:
    """One service and any number of agents; ``close`` leaves no process, container or Redis key behind."""

    def __init__(self, tmp: Path, *, database_url: str, redis_url: str, docker_client: Any, image: str,
                 runtime: str = "docker", lease_s: float = LEASE_S) -> None:
        self.tmp = tmp
        self.database_url = database_url  # postgresql+psycopg://…
        self.redis_url = redis_url
        self.docker = docker_client  # None: a process-runtime cluster (no Docker needed)
        self.runtime = runtime  # what every agent is started with (--runtime)
        self.lease_s = lease_s
        self.image = image
        self.prefix = f"flt{secrets.token_hex(3)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / "service"
        self.service: subprocess.Popen | None = None
        self.agents: dict[str, subprocess.Popen] = {}
        self.agent_gpus: dict[str, str] = {}
        self._logs: list[Any] = []
        self.engine: Engine = create_engine(database_url)
        self._closed = False
        _install_finalizers()
        _LIVE.add(self)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")}
        self.env.update({
            "GPUQ_NODE_LEASE_S": str(lease_s), "GPUQ_HEARTBEAT_INTERVAL_S": "0.5",
            "GPUQ_ADMISSION_INTERVAL_S": "0.5", "GPUQ_RESEND_AFTER_S": "2", "GPUQ_MAX_RETRIES": "3",
            "GPUQ_DEFAULT_GRACE_S": "1",
        })
        # Process jobs: their own cgroup parent (removed at close), work dirs and a stamps dir that the
        # jobs' uids can reach (pytest's tmp dirs are root's 0700), where each attempt writes start/end stamps.
        self.cgroup_parent = f"gpuq-{self.prefix}"
        self.shared = Path(tempfile.mkdtemp(prefix=f"gpuq-{self.prefix}-", dir="/var/tmp"))
        self.stamps = self.shared / "stamps"
        self.stamps.mkdir()
        os.chmod(self.shared, 0o711)
        os.chmod(self.stamps, 0o777)
        self.env.update({"GPUQ_CGROUP_PARENT": self.cgroup_parent, "GPUQ_JOB_WORK_DIR": str(self.shared / "work")})
        self.start_service()
        token = (self.data_dir / "admin.token").read_text().strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self._agent_tokens: dict[str, str] = {}  # node -> its agent token (an agent token speaks for one node)

    # -- processes --------------------------------------------------------------
    def _log(self, name: str):
        fh = open(self.tmp / f"{name}.log", "a")  # noqa: SIM115 - outlives the call; close() closes it
        self._logs.append(fh)
        return fh

    def start_service(self) -> None:
        plain = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        cmd = [sys.executable, "-m", "queue_service.cli", "serve", "--port", str(self.port), "--data-dir",
               str(self.data_dir), "--database-url", plain, "--broker-url", self.redis_url, "--no-local-agent"]
        self.service = spawn(cmd, cwd=REPO, stdout=self._log("service"), stderr=subprocess.STDOUT, env=self.env)

        def up() -> bool:
            if self.service.poll() is not None:
                raise AssertionError(f"gpuq serve exited: {(self.tmp / 'service.log').read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("gpuq serve to answer", up, 60)

    def kill_service(self, sig: int = signal.SIGKILL) -> None:
        assert self.service is not None
        self.service.send_signal(sig)
        self.service.wait(timeout=30)
        self.service = None

    def node(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def start_agent(self, name: str, gpus: str = "h100-80gb:1", *, wait: bool = True) -> str:
        node = self.node(name)
        self.agent_gpus[name] = gpus
        cmd = [sys.executable, "-m", "queue_service.cli", "agent", "--server", self.url, "--broker-url",
               self.redis_url, "--token", self.agent_token(node), "--runtime", self.runtime, "--node-name", node,
               "--simulate-gpus", gpus, "--data-dir", str(self.tmp / f"agent-{name}")]
        log_path = self.tmp / f"agent-{name}.log"
        before = log_path.read_text().count("connected to") if log_path.exists() else 0
        self.agents[name] = spawn(cmd, cwd=REPO, stdout=self._log(f"agent-{name}"), stderr=subprocess.STDOUT,
                                  env=self.env)
        if wait:
            wait_for(f"agent {name} to be up",
                     lambda: self._agent_alive(name) and log_path.read_text().count("connected to") > before, 60)
            wait_for(f"node {node} to be ready", lambda: self.node_status(node) == "ready", 30)
        return node

    def _agent_alive(self, name: str) -> bool:
        proc = self.agents[name]
        if proc.poll() is not None:
            raise AssertionError(f"agent {name} exited: {(self.tmp / f'agent-{name}.log').read_text()[-3000:]}")
        return True

    def kill_agent(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.agents.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    # -- API and database ----------------------------------------------------------
    def submit(self, command: list[str], *, image: str | None = "", resources: dict | None = None,
               **extra: Any) -> str:
        """Submit a job (default: the test image, one whole GPU); ``extra``: e.g. ``time_limit_s``."""
        body: dict[str, Any] = {"name": "fault", "project": "default", "command": command,
                                "resources": resources or {"gpus": 1}, **extra}
        image = self.image if image == "" else image
        if image is not None:
            body["image"] = image
        response = self.http.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_state(self, job_id: str, *states: str, timeout_s: float = 40.0) -> dict:
        return wait_for(f"job {job_id} to be {'/'.join(states)}",
                        lambda: (j := self.job(job_id))["state"] in states and j, timeout_s)

    def wait_final(self, ids: list[str], timeout_s: float = 60.0) -> dict[str, dict]:
        done: dict[str, dict] = {}

        def all_final() -> bool:
            for job_id in ids:
                if job_id not in done:
                    job = self.job(job_id)
                    if job["state"] in FINAL:
                        done[job_id] = job
            return len(done) == len(ids)

        wait_for(f"jobs to finish (still live: {[i for i in ids if i not in done]})", all_final, timeout_s, 0.2)
        return done

    def logs(self, job_id: str) -> str:
        return self.http.get(f"/v1/jobs/{job_id}/logs").json()["stdout"]

    def node_status(self, node: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT status FROM nodes WHERE name = :n"), {"n": node}).scalar()

    def attempts(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT number, state, reason, started_at, ended_at FROM attempts "
                                     "WHERE job_id = :j ORDER BY number"), {"j": job_id}).mappings().all()
        return [dict(r) for r in rows]

    def containers(self, *, all: bool = True, job_id: str | None = None, node: str | None = None) -> list[dict]:
        """Containers of this cluster's nodes (or of one node / job) as ``docker ps`` lists them.

        Each is a dict with ``Id``, ``Labels`` and ``State``.
        """
        if self.docker is None:
            return []
        label = f"gpuq.node={node}" if node else "gpuq.node"
        found = self.docker.api.containers(all=all, filters={"label": [label]})
        mine = [c for c in found if ((c.get("Labels") or {}).get("gpuq.node") or "").startswith(self.prefix)]
        return [c for c in mine if job_id is None or c["Labels"].get("gpuq.job") == job_id]

    def shims(self) -> dict[tuple[str, int, int], dict]:
        """Every process attempt a shim holds on this cluster's agents: key -> {alive, exit, dir}."""
        found: dict[tuple[str, int, int], dict] = {}
        for run_dir in self.tmp.glob("agent-*/shims/*"):
            try:
                spec = json.loads((run_dir / "spec.json").read_text())
            except (OSError, ValueError):
                continue
            pid_text = (run_dir / "shim.pid").read_text().strip() if (run_dir / "shim.pid").exists() else ""
            alive = bool(pid_text) and _running(int(pid_text))
            job_id, attempt, replica = spec["key"]
            found[(job_id, int(attempt), int(replica))] = {
                "alive": alive, "exit": (run_dir / "exit.json").exists(), "dir": run_dir}
        return found

    def stamp_command(self, seconds: float, *, lines: int = 0, retry_s: float | None = None) -> list[str]:
        """A job that writes ``start``, an ``alive`` stamp every 0.2 s for ``seconds`` (``retry_s`` from its
        second attempt on), then ``end``, to its attempt's own stamps file (``STAMPS/<job>.<attempt>``);
        ``lines`` numbered lines on stdout too."""
        ticks = max(1, round(seconds / 0.2))
        later = ticks if retry_s is None else max(1, round(retry_s / 0.2))
        script = (
            f'n={ticks}; [ "$GPUQ_ATTEMPT" = 1 ] || n={later}; '
            'f="$STAMPS/$GPUQ_JOB_ID.$GPUQ_ATTEMPT"; echo "start $(date +%s.%N)" >> "$f"; i=0; '
            'while [ $i -lt $n ]; do echo "alive $(date +%s.%N)" >> "$f"; '
            f'if [ $i -lt {lines} ]; then echo "line $i"; fi; sleep 0.2; i=$((i+1)); done; '
            'echo "end $(date +%s.%N)" >> "$f"'
        )
        return ["sh", "-c", script]

    def inspect(self, container: dict) -> dict:
        return self.docker.api.inspect_container(container["Id"])

    def agent_token(self, node: str) -> str:
        """The agent token bound to ``node`` (made on first use)."""
        if node not in self._agent_tokens:
            response = self.http.post("/v1/tokens", json={"role": "agent", "name": f"faults-{node}", "node_name": node})
            assert response.status_code == 201, response.text
            self._agent_tokens[node] = response.json()["token"]
        return self._agent_tokens[node]

    def agent_request(self, path: str, body: dict) -> httpx.Response:
        """POST as the agent of the node ``body`` names."""
        token = self.agent_token(body["node_name"])
        return httpx.post(f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    # -- teardown -------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        for name in list(self.agents):
            with contextlib.suppress(Exception):  # teardown goes on whatever failed
                proc = self.agents.pop(name)
                _killpg(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        if self.service is not None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
            _killpg(self.service, signal.SIGKILL)  # whatever it started in its group
            self.service = None
        for container in self.containers():
            with contextlib.suppress(Exception):  # teardown goes on whatever failed
                self.docker.api.remove_container(container["Id"], force=True)
        self._kill_process_jobs()
        self.engine.dispose()
        for fh in self._logs:
            fh.close()
        shutil.rmtree(self.shared, ignore_errors=True)

    def _kill_process_jobs(self) -> None:
        """Teardown: every shim and every process of this cluster's cgroups, then the cgroups."""
        for held in self.shims().values():
            pid_file = held["dir"] / "shim.pid"
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        for root in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            for group in sorted(root.glob("*"), reverse=True):
                if not group.is_dir():
                    continue
                with contextlib.suppress(OSError):
                    for pid in (group / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    try:
                        group.rmdir()
                        break
                    except OSError:
                        time.sleep(0.05)
            with contextlib.suppress(OSError):
                root.rmdir()


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"

"""A thousand hosts, simulated: the real service on PostgreSQL + Redis, 1,000 agents in one process.

    .venv/bin/python benchmarks/scale_bench.py [--hosts 1000] [--gpus-per-host 8] [--jobs 10000]
                                               [--baseline-hosts 10] [--smoke]

Runs a real ``gpuq serve`` (PostgreSQL, Redis broker, no local agent) as its
own process, then one process of lightweight simulated agents speaking the
real agent protocol over HTTP — ``register``, ``heartbeat`` (with the
attempts it runs), the start claim (``started``) and ``exited`` — each with
its own node-bound agent token and simulated H100s. Launch and stop commands
come through Redis as for a real agent: the simulator drains the nodes'
dramatiq queues with the broker's own fetch and ack scripts from one thread
(asking Redis which queues hold messages), instead of 2,000 consumer threads; a "job" sleeps for the
seconds its command names (``sim 7.5``) and reports exit code 0. The agents
speak HTTP/1.1 over their own kept-alive connections (:class:`AgentHttp`, a
few hundred lines of client less than httpx): with one shared httpx client the
simulator's event loop was busy 98 % of the time in httpcore's pool at 100
hosts, and its own queueing was what the heartbeats measured.

It submits ``--jobs`` jobs of mixed shapes (1, 2, 4 and 8 whole GPUs, and
25-block shares) in batches of 1,000 and reports:

* time to fill the cluster: first submit until live allocations hold 95 %
  of the GPUs (and the most they held);
* admitted and started jobs/s: first submit until the last start claim;
* heartbeat handling: heartbeats/s and their latency (p50, p99) as the
  agents see it, and the server process's CPU over the run;
* exit -> next start: for every exit reported while jobs still wait, the
  time until the next start claim on that node (p50, p95).

The baseline in the same run is the same benchmark on ``--baseline-hosts``
hosts (default 10) with as many jobs per GPU, run first; or, with
``--baseline-commit REV``, the same size served by the code of ``REV`` (a
``git worktree`` of it, same simulator, same database and broker). Published points of
comparison: KAI's scale test filled 4,000 single-GPU jobs in 6 min 38 s
(about 10 jobs/s, Kubernetes binding included); Kueue's admits about 42
workloads/s. ``--smoke`` runs 2 hosts and 16 jobs, no baseline (CI checks it works, not
its speed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from workers.messages import LAUNCH_ACTOR, node_queue_name

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/11"
FILL_SHARE = 0.95
SUBMIT_TIMEOUT_S = 600.0
# (share of jobs, resources): whole GPUs of 1, 2, 4 and 8, and a quarter of one GPU
SHAPES: list[tuple[float, dict[str, Any]]] = [
    (0.55, {"gpus": 1}),
    (0.15, {"gpus": 2}),
    (0.10, {"gpus": 4}),
    (0.05, {"gpus": 8}),
    (0.15, {"blocks": 25, "gpu_memory_mib": 10240}),
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (``--api-processes``' replicas), from /proc."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    hosts: int
    gpus: int
    jobs: int
    fill_s: float | None = None
    peak_share: float = 0.0
    last_start_s: float = 0.0
    started: int = 0
    heartbeats: int = 0
    heartbeat_s: list[float] = field(default_factory=list)
    heartbeat_errors: int = 0
    gaps_s: list[float] = field(default_factory=list)
    run_s: float = 0.0
    server_cpu_s: float = 0.0
    simulator_cpu_s: float = 0.0  # this process: the agents' loop and the mailbox thread
    http_errors: int = 0
    retries: int = 0
    lost_nodes: int = 0


def listening_sockets(port: int) -> int:
    """Sockets listening on local ``port`` (each API process of ``--api-processes`` binds its own)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A"  # 0A: LISTEN
    return count


class Service:
    """``gpuq serve`` on a fresh PostgreSQL database and a flushed Redis db, no local agent."""

    def __init__(self, tmp: Path, database_url: str, redis_url: str, root: Path = ROOT, processes: int = 1) -> None:
        from tests.faults.cluster import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")}
        env["PYTHONPATH"] = str(root)  # the tree whose code serves (``--baseline-commit``: another checkout)
        env["XDG_CONFIG_HOME"] = str(tmp / "config")  # its client config, not the user's (cli_config)
        self.log_path = Path(tempfile.gettempdir()) / "gpuq-scale-bench-serve.log"  # kept after the run
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "queue_service.cli", "serve", "--port", str(self.port), "--data-dir", str(tmp),
             "--database-url", database_url, "--broker-url", redis_url, "--no-local-agent",
             *(["--api-processes", str(processes)] if processes > 1 else [])],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"gpuq serve did not come up:\n{tail}")
            time.sleep(0.2)
        # every API process listens before the agents connect: a kept-alive connection stays where it landed
        while listening_sockets(self.port) < processes:
            if self.proc.poll() is not None or time.monotonic() > deadline + 60:
                raise RuntimeError(f"gpuq serve's {processes} API processes did not all listen")
            time.sleep(0.2)
        self.admin_token = (tmp / "admin.token").read_text().strip()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class TransportError(Exception):
    """The connection failed or the server closed it before it answered."""


TRANSPORT_ERRORS = (TransportError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, httpx.HTTPError)


@dataclass(slots=True)
class Reply:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> Reply:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.body[:500]!r}")
        return self


class AgentHttp:
    """One agent's HTTP/1.1 connections to the service: JSON POSTs on kept-alive connections, one per request
    in flight (a real agent's client keeps its own too); a connection the server closed is replaced."""

    def __init__(self, host: str, port: int, token: str, timeout_s: float = 60.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.head = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[Reply, bool]:
        """The reply, and whether it came on a fresh connection (False: a kept-alive one)."""
        data = json.dumps(body).encode()
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), self.head, len(data), data)
        fresh = not self.idle
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(request)
            reply, keep = await asyncio.wait_for(self._read(reader), self.timeout_s)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return reply, fresh

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[Reply, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise TransportError("connection closed before the answer")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, keep = 0, False, True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                keep = value != b"close"
        if not chunked:
            return Reply(status, await reader.readexactly(length)), keep
        parts = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readline()
        return Reply(status, b"".join(parts)), keep

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


class Mailbox:
    """One thread that drains the nodes' dramatiq queues (fetch + ack) and hands each message to the loop."""

    PASS_S = 0.01  # between two passes: a launch waits at most this long (plus the pass) to be seen

    def __init__(self, redis_url: str, queues: list[str], loop: asyncio.AbstractEventLoop, deliver) -> None:
        from dramatiq.brokers.redis import RedisBroker

        self.broker = RedisBroker(url=redis_url)
        self.queues = queues
        self.loop = loop
        self.deliver = deliver
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._drain, args=(queues,), daemon=True)]
        for t in self.threads:
            t.start()

    def _drain(self, queues: list[str]) -> None:
        """Ask Redis which queues hold messages (an empty list is no key: one ``KEYS`` on the bench's own
        database), then fetch only from those. Asking every queue's length, 1,000 ``LLEN``s a pass, in a pass
        that started again at once whenever it found a message, kept a thread of this process busy under load:
        it took the GIL from the agents' loop, and their requests and heartbeats waited here, not at the server."""
        from dramatiq import Message

        prefix = f"{self.broker.namespace}:"
        mine = set(queues)
        pattern = f"{prefix}{node_queue_name('')}*"  # every node's queue (and its .msgs hash)
        while not self.stopping.is_set():
            for key in self.broker.client.keys(pattern):
                queue = key.decode()[len(prefix):]
                if queue not in mine:
                    continue  # its .msgs hash, a delay queue
                for data in self.broker.do_fetch(queue, 16) or []:
                    message = Message.decode(data)
                    self.broker.do_ack(queue, message.options["redis_message_id"])
                    self.loop.call_soon_threadsafe(self.deliver, message.actor_name, message.args[0])
            self.stopping.wait(self.PASS_S)

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(5)


class SimAgent:
    """One simulated host: registers, heartbeats with what it runs, claims, sleeps, reports exits."""

    def __init__(self, bench: Bench, name: str, token: str) -> None:
        self.bench = bench
        self.name = name
        self.http = AgentHttp(bench.host, bench.port, token)
        self.running: dict[tuple[str, int, int], asyncio.Task] = {}
        self.heartbeat_every_s = 5.0

    def inventory(self) -> dict[str, Any]:
        gpus = [{"uuid": f"GPU-{self.name}-{i}", "index": i, "name": "NVIDIA H100 80GB HBM3", "model": "h100-80gb",
                 "memory_mib": 81559, "sm_count": 132, "nvlink_peers": [p for p in range(self.bench.gpus_per_host)
                                                                        if p != i]}
                for i in range(self.bench.gpus_per_host)]
        return {"node_name": self.name, "hostname": self.name, "boot_id": f"boot-{self.name}", "cpus": 128,
                "memory_mib": 1024 * 1024, "gpus": gpus, "gpu_source": "simulated", "runtimes": ["process"],
                "limits": "enforced"}

    async def post(self, path: str, body: dict[str, Any]) -> Reply:
        """POST, tried again (up to 3 times) when a kept-alive connection drops before it answers (the server
        closed it as it was reused), as the real agent's client does; each retry is counted."""
        for attempt in range(3):
            try:
                reply, _fresh = await self.http.post(path, body)
                return reply
            except (TransportError, ConnectionError, asyncio.IncompleteReadError):
                if attempt == 2:
                    raise
                self.bench.figures.retries += 1
        raise AssertionError("unreachable")

    async def register(self) -> None:
        answer = (await self.post("/v1/agent/register", {"inventory": self.inventory()})).raise_for_status().json()
        self.heartbeat_every_s = float(answer["heartbeat_s"])

    async def heartbeats(self) -> None:
        await asyncio.sleep(random.uniform(0, self.heartbeat_every_s))  # spread the hosts over the interval
        figures = self.bench.figures
        while True:
            keys = [{"job_id": j, "attempt": a, "replica": r} for j, a, r in self.running]
            t = time.monotonic()
            try:
                response = await self.post("/v1/agent/heartbeat", {"node_name": self.name, "running": keys})
                figures.heartbeat_s.append(time.monotonic() - t)
                figures.heartbeats += 1
                if response.status_code >= 400:
                    figures.heartbeat_errors += 1
                else:
                    answer = response.json()
                    # as the real agent (workers.agent.lease): the service sets the interval on every answer
                    self.heartbeat_every_s = float(answer.get("heartbeat_s", self.heartbeat_every_s))
                    if not answer["known"]:
                        figures.lost_nodes += 1
            except TRANSPORT_ERRORS:
                figures.heartbeat_errors += 1
            await asyncio.sleep(self.heartbeat_every_s)

    def launch(self, spec: dict[str, Any]) -> None:
        key = (spec["job_id"], spec["attempt"], spec.get("replica", 0))
        if key not in self.running:
            self.running[key] = asyncio.ensure_future(self._run(spec, key))

    async def _report_exit(self, body: dict[str, Any]) -> None:
        """Report an exit until the server answers it (a duplicate changes nothing), as the real agent keeps
        an exit until it is acknowledged: a report that timed out under load, forgotten, left its job
        running until the heartbeats' vanished rule lost and requeued it. Each failed try is counted."""
        while True:
            try:
                answer = await self.post("/v1/agent/exited", body)
                if answer.status_code < 500:
                    return
            except TRANSPORT_ERRORS:
                pass
            self.bench.figures.http_errors += 1
            await asyncio.sleep(1.0)

    def stop(self, request: dict[str, Any]) -> None:
        key = (request["job_id"], request["attempt"], request.get("replica", 0))
        task = self.running.get(key)
        if task is not None:
            task.cancel()

    async def _run(self, spec: dict[str, Any], key: tuple[str, int, int]) -> None:
        ref = {"node_name": self.name, "job_id": key[0], "attempt": key[1], "replica": key[2]}
        bench = self.bench
        try:
            claim = await self.post("/v1/agent/started", ref)
            if claim.status_code >= 400:
                if claim.status_code >= 500:
                    bench.figures.http_errors += 1
                return
            bench.on_start(self.name)
            try:
                await asyncio.sleep(float(spec["command"][1]))
                outcome = {"exit_code": 0, "reason": "exited"}
            except asyncio.CancelledError:
                outcome = {"exit_code": -15, "reason": "stopped"}
            await self._report_exit({**ref, **outcome})
            bench.on_exit(self.name)
        except TRANSPORT_ERRORS:
            bench.figures.http_errors += 1
        finally:
            self.running.pop(key, None)


class Bench:
    def __init__(self, args: argparse.Namespace, hosts: int, jobs: int) -> None:
        self.args = args
        self.hosts = hosts
        self.gpus_per_host = args.gpus_per_host
        self.jobs = jobs
        self.figures = Figures(hosts=hosts, gpus=hosts * args.gpus_per_host, jobs=jobs)
        self.agents: dict[str, SimAgent] = {}
        self.exits_waiting: dict[str, list[float]] = {}
        self.queue_empty = False
        self.t0 = 0.0
        self.http: httpx.AsyncClient  # the admin's: tokens and submissions (the agents have their own)
        self.host, self.port = "127.0.0.1", 0

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """POST, tried again (up to 3 times) when the connection drops: a kept-alive connection the server
        closed as it was reused, as the real agent's client does; each retry is counted."""
        for attempt in range(3):
            try:
                return await self.http.post(path, json=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError):
                if attempt == 2:
                    raise
                self.figures.retries += 1
        raise AssertionError("unreachable")

    def on_start(self, node: str) -> None:
        now = time.monotonic()
        self.figures.started += 1
        self.figures.last_start_s = now - self.t0
        waiting = self.exits_waiting.get(node)
        if waiting:  # the exit that freed room for this start: the oldest one not yet followed by a start
            self.figures.gaps_s.append(now - waiting.pop(0))

    def on_exit(self, node: str) -> None:
        if not self.queue_empty:
            self.exits_waiting.setdefault(node, []).append(time.monotonic())

    def deliver(self, actor: str, payload: dict[str, Any]) -> None:
        agent = self.agents.get(payload.get("node_name", ""))
        if agent is None:
            return
        if actor == LAUNCH_ACTOR:
            agent.launch(payload)
        else:
            agent.stop(payload)

    def bodies(self) -> list[dict[str, Any]]:
        rng = random.Random(7)
        weights = [w for w, _ in SHAPES]
        out = []
        for i in range(self.jobs):
            _, resources = rng.choices(SHAPES, weights=weights)[0]
            run_s = rng.uniform(self.args.min_run_s, self.args.max_run_s)
            out.append({"name": f"sim{i}", "project": "default", "command": ["sim", f"{run_s:.2f}"],
                        "resources": resources, "time_limit_s": 3600})
        return out

    async def run(self, service: Service, database_url: str) -> Figures:
        from sqlalchemy import create_engine

        self.port = service.port
        # the admin's batches of 1,000 jobs wait behind the agents' traffic (at 1,000 hosts one took over 60 s)
        self.http = httpx.AsyncClient(base_url=service.url, timeout=SUBMIT_TIMEOUT_S)
        admin = {"Authorization": f"Bearer {service.admin_token}"}
        names = [f"sim-{i:04d}" for i in range(self.hosts)]

        async def make_agent(name: str) -> None:
            made = await self.post("/v1/tokens", {"role": "agent", "name": name, "node_name": name}, admin)
            agent = SimAgent(self, name, made.raise_for_status().json()["token"])
            await agent.register()
            self.agents[name] = agent

        t = time.monotonic()
        for i in range(0, len(names), 50):
            await asyncio.gather(*(make_agent(n) for n in names[i:i + 50]))
        print(f"  {self.hosts} agents: tokens made and registered in {time.monotonic() - t:.1f} s", flush=True)
        mailbox = Mailbox(self.args.redis, [node_queue_name(n) for n in names], asyncio.get_running_loop(),
                          self.deliver)
        beats = [asyncio.ensure_future(a.heartbeats()) for a in self.agents.values()]
        engine = create_engine(database_url)
        cpu0, own0 = cpu_seconds(service.proc.pid), time.process_time()
        try:
            self.t0 = time.monotonic()
            bodies = self.bodies()
            for i in range(0, len(bodies), 1000):
                (await self.http.post("/v1/jobs/batch", json={"jobs": bodies[i:i + 1000]},
                                      headers=admin)).raise_for_status()
            print(f"  {self.jobs} jobs submitted in {time.monotonic() - self.t0:.1f} s", flush=True)
            await self._watch(engine)
        finally:
            self.figures.server_cpu_s = cpu_seconds(service.proc.pid) - cpu0
            self.figures.simulator_cpu_s = time.process_time() - own0
            self.figures.run_s = time.monotonic() - self.t0
            mailbox.close()
            pending = [*beats, *(task for a in self.agents.values() for task in a.running.values())]
            for task in pending:  # a run cut short by --timeout-s: stop every agent task before the client closes
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            engine.dispose()
            for agent in self.agents.values():
                agent.http.close()
            await self.http.aclose()
        return self.figures

    async def _watch(self, engine) -> None:
        """Poll the database (in a thread: the agents' loop must never wait on it) until no job is live."""
        from sqlalchemy import text

        def look() -> tuple[float, int, int]:
            with engine.connect() as conn:
                held = conn.execute(text(
                    "SELECT coalesce(sum(CASE WHEN kind = 'gpu' THEN 1.0 ELSE blocks / 100.0 END), 0) "
                    "FROM allocations WHERE released_at IS NULL")).scalar_one()
                waiting, live = conn.execute(text(
                    "SELECT count(*) FILTER (WHERE state = 'queued'), "
                    "count(*) FILTER (WHERE state IN ('queued', 'admitted', 'running')) FROM jobs")).one()
            return float(held), int(waiting), int(live)

        total_gpus = self.figures.gpus
        deadline = time.monotonic() + self.args.timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            held, waiting, live = await asyncio.to_thread(look)
            share = held / total_gpus
            self.figures.peak_share = max(self.figures.peak_share, share)
            if self.figures.fill_s is None and share >= FILL_SHARE:
                self.figures.fill_s = time.monotonic() - self.t0
            self.queue_empty = waiting == 0
            if live == 0:
                return
        print(f"  gave up after {self.args.timeout_s:.0f} s with jobs still live", flush=True)


def exported(rev: str, into: Path) -> Path:
    """The tree of ``rev`` (``git archive``: no worktree, the checkout is left alone), to serve a baseline from."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def one_run(args: argparse.Namespace, hosts: int, jobs: int, root: Path = ROOT, processes: int = 1) -> Figures:
    import redis

    from tests.conftest import _postgres_database

    redis.Redis.from_url(args.redis).flushdb()
    db = _postgres_database()
    url = next(db)
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Path(tmp), url, args.redis, root=root, processes=processes)
        try:
            return asyncio.run(Bench(args, hosts, jobs).run(service, url))
        finally:
            service.close()
            db.close()
            redis.Redis.from_url(args.redis).flushdb()


def report(label: str, f: Figures) -> None:
    fill = "not reached" if f.fill_s is None else f"{f.fill_s:.1f} s"
    rate = f.started / f.last_start_s if f.last_start_s else 0.0
    beats_per_s = f.heartbeats / f.run_s if f.run_s else 0.0
    print(f"{label}: {f.hosts} hosts x {f.gpus // max(1, f.hosts)} GPUs = {f.gpus} GPUs, {f.jobs} jobs")
    print(f"  fill to {FILL_SHARE:.0%} of GPUs: {fill} (peak {f.peak_share:.1%} held)")
    print(f"  admitted and started: {f.started} in {f.last_start_s:.1f} s = {rate:.0f} jobs/s")
    print(f"  heartbeats: {beats_per_s:.0f}/s, latency p50 {pct(f.heartbeat_s, 0.5) * 1000:.0f} ms, "
          f"p99 {pct(f.heartbeat_s, 0.99) * 1000:.0f} ms; {f.heartbeat_errors} failed, {f.lost_nodes} unknown")
    print(f"  exit -> next start on that node: p50 {pct(f.gaps_s, 0.5) * 1000:.0f} ms, "
          f"p95 {pct(f.gaps_s, 0.95) * 1000:.0f} ms ({len(f.gaps_s)} pairs)")
    print(f"  server CPU: {f.server_cpu_s:.1f} s over {f.run_s:.1f} s ({f.server_cpu_s / max(f.run_s, 1e-9):.0%} "
          f"of a core, {f.server_cpu_s / max(f.started, 1) * 1000:.0f} ms a job); simulator CPU "
          f"{f.simulator_cpu_s / max(f.run_s, 1e-9):.0%} of a core; 5xx or transport errors seen by agents: "
          f"{f.http_errors} ({f.retries} dropped connections retried)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--gpus-per-host", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--baseline-hosts", type=int, default=10)
    parser.add_argument("--baseline-commit", default="",
                        help="the baseline: this size served by the code of this commit (instead of fewer hosts)")
    parser.add_argument("--commit", default="",
                        help="serve the measured run from this commit (default: the working tree, others' edits too)")
    parser.add_argument("--min-run-s", type=float, default=5.0)
    parser.add_argument("--max-run-s", type=float, default=20.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--redis", default=REDIS)
    parser.add_argument("--api-processes", type=int, default=1, metavar="N",
                        help="serve the measured run with N API processes (the baseline with one)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hosts, args.jobs, args.baseline_hosts = 2, 16, 0
        args.min_run_s, args.max_run_s, args.timeout_s = 0.1, 0.3, 120.0
    per_gpu = args.jobs / (args.hosts * args.gpus_per_host)
    baseline_jobs = max(1, round(per_gpu * args.baseline_hosts * args.gpus_per_host))
    base = None
    if args.baseline_commit:
        baseline_jobs = args.jobs
        print(f"baseline run ({args.hosts} hosts, served by {args.baseline_commit}):", flush=True)
        with tempfile.TemporaryDirectory(prefix="gpuq-baseline-") as tree:
            base = one_run(args, args.hosts, args.jobs, root=exported(args.baseline_commit, Path(tree)))
    elif args.baseline_hosts:  # 0 (the smoke run): no baseline
        print(f"baseline run ({args.baseline_hosts} hosts):", flush=True)
        base = one_run(args, args.baseline_hosts, baseline_jobs)
    print(f"measured run ({args.hosts} hosts{f', served by {args.commit}' if args.commit else ''}"
          f"{f', {args.api_processes} API processes' if args.api_processes > 1 else ''}):", flush=True)
    if args.commit:
        with tempfile.TemporaryDirectory(prefix="gpuq-measured-") as tree:
            big = one_run(args, args.hosts, args.jobs, root=exported(args.commit, Path(tree)),
                          processes=args.api_processes)
    else:
        big = one_run(args, args.hosts, args.jobs, processes=args.api_processes)
    print()
    if base is not None:
        report(f"baseline ({args.baseline_commit})" if args.baseline_commit else "baseline", base)
    report(f"measured ({args.commit})" if args.commit else "measured", big)
    print("published: KAI 4,000 single-GPU jobs filled in 6 min 38 s (~10 jobs/s); Kueue ~42 workloads/s admitted")
    complete = big.started >= args.jobs and (base is None or base.started >= baseline_jobs)
    return 0 if complete and big.http_errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

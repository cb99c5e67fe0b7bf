"""The API's hot path, the embedded default under a submit storm, and an idle server (prints figures).

    .venv/bin/python benchmarks/api_bench.py [--database-url postgresql://postgres@127.0.0.1/test]
        [--clients 20] [--submits 1000] [--health-s 5] [--idle-s 60] [--baseline COMMIT] [--smoke]
        [--api-processes N]     # with --database-url: N processes on the port, beside 1
    .venv/bin/python benchmarks/api_bench.py --idle-only [--idle-s 60] [--baseline COMMIT]

The server is ``gpuq serve`` (API, admitter and the local agent with
simulated GPUs) in a child process; the load comes from this one.

- ``GET /v1/health``: ``wrk`` when it is installed (``apt-get install wrk``),
  else a threaded ``httpx`` generator (which then is the limit: it says so).
- single ``POST /v1/jobs`` from ``--clients`` concurrent clients (default 20
  on SQLite, 8 on PostgreSQL) while jobs run: ``--running`` one-GPU jobs
  hold the node's GPUs (``sleep``), and every submitted job asks for a GPU,
  so each submit also costs an admission cycle that finds nothing free.
  Figures: jobs/s, p50/p99/max latency, 5xx and other errors, and how many
  of the running jobs were stopped by the storm (the goal: none).
- idle CPU: the server's own user+system CPU over ``--idle-s`` seconds with
  no jobs at all (from ``/proc/<pid>/stat``), as % of one core, and each
  thread's wakeups per second (context switches, ``/proc/<pid>/task/*/status``).
  ``--idle-only`` measures only this, with this tree's and the baseline's
  servers idle side by side over the same seconds.

``--baseline COMMIT`` runs the same measurements, in the same run, on a
``git worktree`` of COMMIT (the code before a change) and prints both.
``--smoke`` runs tiny sizes (CI: it checks the script works, not speed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
from _worktree import checkout  # this folder's shared helper (the script's folder is on the path)

ROOT = Path(__file__).resolve().parents[1]
REDIS = "redis://127.0.0.1:6379/12"  # --api-processes' broker, flushed: not a database the tests use (15 down)

SERVE = """
import os, sys, time, logging
from pathlib import Path
from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings
logging.basicConfig(level=logging.WARNING)
settings = Settings(runtime="process")
server = EmbeddedServer(settings).start()
others = None
if getattr(settings, "api_processes", 1) > 1:  # --api-processes: the replicas, up once each listens
    from queue_service import replicas
    others = replicas.Replicas(settings).start()
    deadline = time.monotonic() + 120
    while not all(p is not None and p.is_alive() and listens(p.pid, settings.port) for p in others.processes):
        assert time.monotonic() < deadline, "the API processes did not come up"
        time.sleep(0.2)
    print(json.dumps([p.pid for p in others.processes]), file=sys.stderr, flush=True)
import threading
for thread in threading.enumerate():
    # numba compiling holds the GIL: measure after it (a smoke run does not wait)
    if thread.name == "gpuq-warmup" and not os.environ.get("GPUQ_BENCH_SMOKE"):
        thread.join()
print("READY", flush=True)
# which thread is which (native id -> what it is), for the idle figures' wakeups per thread
import json
print(json.dumps({t.native_id: t.name if not t.name.startswith("Thread-") else type(t).__name__
                  for t in threading.enumerate()}), flush=True)
sys.stdin.read()
if others is not None:
    others.stop()
server.stop(stop_jobs=True)
"""

LISTENS = """
import json, os, sys, time
def listens(pid, port):
    # a listening socket (state 0A) on the port among the process's open sockets
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":
                inodes.add(f[9])
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link[8:-1] in inodes for link in links if link.startswith("socket:["))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    token: str
    data_dir: Path
    thread_names: dict[int, str] = field(default_factory=dict)
    replica_pids: list[int] = field(default_factory=list)  # --api-processes: the other processes

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kw)

    def cpu_s(self) -> float:
        """The server processes' user + system CPU seconds so far (the first and its replicas)."""
        total = 0
        for pid in (self.proc.pid, *self.replica_pids):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def serve(code_root: Path, *, database_url: str | None, gpus: int, smoke: bool = False,
          processes: int = 1) -> Iterator[Server]:
    """``gpuq serve`` from ``code_root`` in a child process (its own data dir, config dir and port); with
    ``processes`` > 1 its API processes share the port, on Redis (``REDIS``, flushed) with the local agent."""
    with tempfile.TemporaryDirectory(prefix="gpuq-bench-") as tmp:
        port = free_port()
        env = {**os.environ, "HOME": tmp, "XDG_CONFIG_HOME": f"{tmp}/config", "PYTHONPATH": str(code_root),
               "GPUQ_DATA_DIR": f"{tmp}/data", "GPUQ_PORT": str(port), "GPUQ_SIMULATE_GPUS": f"h100-80gb:{gpus}",
               "GPUQ_JOB_WORK_DIR": f"{tmp}/work"}
        env.pop("GPUQ_DATABASE_URL", None)
        if database_url:
            env["GPUQ_DATABASE_URL"] = database_url
        if smoke:
            env["GPUQ_BENCH_SMOKE"] = "1"
        if processes > 1:
            import redis

            redis.Redis.from_url(REDIS).flushdb()
            env |= {"GPUQ_API_PROCESSES": str(processes), "GPUQ_BROKER_URL": REDIS, "GPUQ_LOCAL_AGENT": "true"}
        proc = subprocess.Popen([sys.executable, "-c", LISTENS + SERVE], cwd=code_root, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "READY" not in line:
                raise SystemExit(f"the server did not start (exit {proc.wait()})")
            names = {int(tid): name for tid, name in json.loads(proc.stdout.readline()).items()}
            assert proc.stderr is not None
            pids = json.loads(proc.stderr.readline()) if processes > 1 else []
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # never let its stderr fill up
            token = (Path(tmp) / "data" / "admin.token").read_text().strip()
            yield Server(proc, f"http://127.0.0.1:{port}", token, Path(tmp) / "data", names, pids)
        finally:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


# -- GET /v1/health -------------------------------------------------------------


def health_rate(server: Server, *, duration_s: float, connections: int) -> tuple[float, str]:
    """Requests/s of GET /v1/health and what measured it."""
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(duration_s))}s",
                              f"{server.url}/v1/health"], capture_output=True, text=True, check=True).stdout
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return rate, f"wrk, {connections} connections" + (f", {errors.group(1)} non-2xx" if errors else "")
    done = [0]
    stop = time.monotonic() + duration_s

    def worker() -> None:
        with httpx.Client(base_url=server.url) as http:
            while time.monotonic() < stop:
                http.get("/v1/health").raise_for_status()
                done[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - start), f"httpx, {connections} threads (no wrk: the client is the limit)"


# -- the submit storm -------------------------------------------------------------


@dataclass
class Storm:
    jobs_s: float
    latencies_s: list[float]
    errors_5xx: int
    errors_other: int
    running_stopped: int
    stuck: list[str] = field(default_factory=list)
    server_cpu_ms: float = 0.0  # the server processes' CPU per submit (the 2-core box's budget: also the clients')
    client_cpu_ms: float = 0.0  # this process's (the load generator's) CPU per submit

    def row(self) -> str:
        ms = [v * 1000 for v in self.latencies_s]
        return (f"{self.jobs_s:7.0f} jobs/s  p50 {pct(ms, 0.5):6.0f} ms  p99 {pct(ms, 0.99):6.0f} ms  "
                f"max {max(ms, default=0):6.0f} ms  5xx {self.errors_5xx}  other errors {self.errors_other}  "
                f"running jobs stopped {self.running_stopped}  CPU per submit: server {self.server_cpu_ms:.1f} ms, "
                f"client {self.client_cpu_ms:.1f} ms")


def wait_running(http: httpx.Client, ids: list[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [http.get(f"/v1/jobs/{j}").json()["state"] for j in ids]
        if all(s == "running" for s in states):
            return
        time.sleep(0.2)
    raise SystemExit(f"the running jobs did not start: {states}")


def storm(server: Server, *, clients: int, submits: int, running: int) -> Storm:
    """``submits`` single POST /v1/jobs from ``clients`` threads while ``running`` jobs hold every GPU."""
    with server.client() as http:
        holders = [http.post("/v1/jobs", json={"name": f"hold-{i}", "command": ["sleep", "3600"],
                                               "resources": {"gpus": 1}}).json()["id"] for i in range(running)]
        wait_running(http, holders)
    body = {"command": ["true"], "resources": {"gpus": 1}}
    latencies: list[float] = []
    errors = {"5xx": 0, "other": 0}
    lock = threading.Lock()
    counter = iter(range(submits))

    def client() -> None:
        with server.client() as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    status = http.post("/v1/jobs", json={**body, "name": f"storm-{i}"}).status_code
                except httpx.HTTPError:
                    status = 0
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                    if status >= 500:
                        errors["5xx"] += 1
                    elif status != 201:
                        errors["other"] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start, server_cpu_s, client_cpu_s = time.perf_counter(), server.cpu_s(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    server_cpu_s, client_cpu_s = server.cpu_s() - server_cpu_s, time.process_time() - client_cpu_s
    with server.client() as http:
        states = {j: http.get(f"/v1/jobs/{j}").json()["state"] for j in holders}
    stopped = sum(1 for s in states.values() if s != "running")
    return Storm(submits / elapsed, latencies, errors["5xx"], errors["other"], stopped,
                 server_cpu_ms=server_cpu_s * 1000 / submits, client_cpu_ms=client_cpu_s * 1000 / submits)


# -- idle CPU -------------------------------------------------------------------


@dataclass
class Idle:
    cpu_pct: float  # of one core
    wakeups_s: dict[str, float]  # context switches per second, by thread (summed over threads of one kind)

    def row(self) -> str:
        busiest = sorted(self.wakeups_s.items(), key=lambda kv: -kv[1])
        threads = ", ".join(f"{name} {rate:.1f}" for name, rate in busiest if rate >= 0.05)
        return f"{self.cpu_pct:6.2f} % of a core   wakeups/s {sum(self.wakeups_s.values()):6.1f}: {threads}"


def thread_switches(server: Server) -> dict[int, int]:
    """Context switches (voluntary + not) of each of the server's threads so far: a thread's wakeups."""
    switches = {}
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        switches[int(task.name)] = sum(int(line.split()[1]) for line in status.splitlines()
                                       if "ctxt_switches:" in line)
    return switches


def idle_start(server: Server) -> tuple[float, float, dict[int, int]]:
    return server.cpu_s(), time.monotonic(), thread_switches(server)


def idle_end(server: Server, start: tuple[float, float, dict[int, int]]) -> Idle:
    c0, t0, s0 = start
    cpu_s, elapsed_s, s1 = server.cpu_s() - c0, time.monotonic() - t0, thread_switches(server)
    wakeups: dict[str, float] = {}
    for tid, count in s1.items():
        name = server.thread_names.get(tid, "other (not a Python thread)")
        wakeups[name] = wakeups.get(name, 0.0) + (count - s0.get(tid, 0)) / elapsed_s
    return Idle(100 * cpu_s / elapsed_s, wakeups)


def idle_cpu(server: Server, *, duration_s: float) -> Idle:
    """CPU (% of one core) and wakeups per thread of the server while idle (after 2 s to settle)."""
    time.sleep(min(2.0, duration_s))
    start = idle_start(server)
    time.sleep(duration_s)
    return idle_end(server, start)


def idle_side_by_side(roots: list[tuple[str, Path]], args: argparse.Namespace) -> list[tuple[str, Idle]]:
    """Each tree's idle server, all running at once and measured over the same seconds (same load on the box)."""
    with ExitStack() as stack:
        servers = [(name, stack.enter_context(serve(root, database_url=stack.enter_context(
                        fresh_database(args.database_url)), gpus=args.running, smoke=args.smoke)))
                   for name, root in roots]
        time.sleep(min(2.0, args.idle_s))
        starts = [idle_start(server) for _, server in servers]
        time.sleep(args.idle_s)
        return [(name, idle_end(server, start)) for (name, server), start in zip(servers, starts, strict=True)]


# -- main -----------------------------------------------------------------------


@contextmanager
def fresh_database(url: str | None) -> Iterator[str | None]:
    """A new, empty PostgreSQL database next to ``url`` for one measurement (each checkout migrates its own)."""
    if url is None:
        yield None
        return
    from sqlalchemy import create_engine, text

    base = url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    name = f"gpuq_bench_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def measure(code_root: Path, args: argparse.Namespace, *, processes: int = 1) -> dict[str, object]:
    out: dict[str, object] = {}
    with fresh_database(args.database_url) as url, serve(code_root, database_url=url, gpus=args.running,
                                                          smoke=args.smoke, processes=processes) as server:
        out["idle"] = idle_cpu(server, duration_s=args.idle_s)
        out["health"] = health_rate(server, duration_s=args.health_s, connections=args.connections)
        out["storm"] = storm(server, clients=args.clients, submits=args.submits, running=args.running)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: the embedded SQLite)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent submitters (20 SQLite, 8 PostgreSQL)")
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--running", type=int, default=8, help="jobs running (one GPU each) during the storm")
    parser.add_argument("--health-s", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16, help="connections for the health load")
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--baseline", metavar="COMMIT", default=None, help="also measure this commit (git worktree)")
    parser.add_argument("--idle-only", action="store_true",
                        help="only the idle figures: this tree's and --baseline's servers idle side by side")
    parser.add_argument("--api-processes", type=int, default=1, metavar="N",
                        help="serve with N API processes (PostgreSQL; Redis at REDIS), beside this tree's 1")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script works, not speed")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    args = parser.parse_args(argv)
    if args.clients is None:
        args.clients = 8 if args.database_url else 20
    if args.smoke:
        args.clients, args.submits, args.running = min(args.clients, 4), 20, 2
        args.health_s, args.idle_s, args.connections = 0.5, 0.5, 4
    db = "PostgreSQL" if args.database_url else "SQLite (embedded default)"
    if args.idle_only:
        with checkout(args.baseline) as base:
            roots = [("this tree", ROOT)] + ([(f"baseline {args.baseline[:10]}", base)] if base is not None else [])
            idles = idle_side_by_side(roots, args)
        print(f"gpuq serve idle (no jobs), {db}, {os.cpu_count()} cores, over the same {args.idle_s:g} s")
        for name, idle in idles:
            print(f"  [{name}] {idle.row()}")
        if args.json:
            print(json.dumps({name: {"idle_cpu_pct": idle.cpu_pct, "wakeups_s": idle.wakeups_s}
                              for name, idle in idles}))
        return
    if args.api_processes > 1 and not args.database_url:
        parser.error("--api-processes needs --database-url postgresql://...")
    results: list[tuple[str, dict[str, object]]] = []
    with checkout(args.baseline) as base:
        if args.api_processes > 1:
            results.append((f"this tree, {args.api_processes} API processes",
                            measure(ROOT, args, processes=args.api_processes)))
        results.append(("this tree", measure(ROOT, args)))
        if base is not None:
            results.append((f"baseline {args.baseline[:10]}", measure(base, args)))
    print(f"gpuq serve, {db}, {os.cpu_count()} cores, server and load on one machine")
    for name, r in results:
        rate, how = cast(tuple[float, str], r["health"])
        print(f"[{name}]")
        print(f"  GET /v1/health                     {rate:8.0f} req/s   ({how})")
        print(f"  POST /v1/jobs, {args.clients:2d} clients, {args.running} jobs running: {r['storm'].row()}")  # type: ignore[attr-defined]
        print(f"  idle CPU over {args.idle_s:g} s   {r['idle'].row()}")  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps({name: {"health_req_s": r["health"][0], "idle_cpu_pct": r["idle"].cpu_pct,  # type: ignore[index,attr-defined]
                                 "jobs_s": r["storm"].jobs_s, "errors_5xx": r["storm"].errors_5xx,  # type: ignore[attr-defined]
                                 "running_stopped": r["storm"].running_stopped}  # type: ignore[attr-defined]
                          for name, r in results}))

if __name__ == "__main__":
    main()

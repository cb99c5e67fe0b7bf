"""Composition roots: ``gpuq serve`` (API + admitter + optional local agent) and ``gpuq agent``.

This is the one module of ``queue_service`` that starts ``workers`` code: it
wires the in-process agent of the embedded default. The API, admission and
database code never import it.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from queue_service import cli_config, replicas
from queue_service.app import create_app
from queue_service.bootstrap import prepare
from queue_service.context import ServiceContext
from queue_service.settings import Settings

if TYPE_CHECKING:
    import dramatiq

    from workers.agent import Agent

log = logging.getLogger("gpuq")

SWITCH_INTERVAL_S = 0.001  # the interpreter's thread switch interval in the server process (default 5 ms)


@dataclass
class LocalAgent:
    agent: Agent
    worker: dramatiq.Worker
    node_name: str

    def stop(self, *, stop_jobs: bool = False) -> None:
        """Stop the agent; by default its jobs go on under their shims (and containers) for the next agent."""
        from workers.actors import unregister_agent

        self.agent.shutdown(stop_jobs=stop_jobs, grace_s=5.0)
        self.worker.stop()
        unregister_agent(self.node_name)


def job_work_root(data_dir: Path, *, switching_user: bool) -> Path:
    """Where process jobs get their work directories: inside the (root-only) data dir unless they run as another user.

    A job user cannot traverse the 0700 data directory, so its work directories
    live under ``GPUQ_JOB_WORK_DIR`` (default ``/var/tmp/gpuq-work/<data dir hash>``,
    0711: each job enters only its own 0700 directory).
    """
    configured = os.environ.get("GPUQ_JOB_WORK_DIR")
    if configured:
        return Path(configured)
    if not switching_user:
        return data_dir / "work"
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp/gpuq-work") / digest


def make_runtimes(runtime: str, data_dir: Path, *, simulated_gpus: bool = False) -> dict:
    """Host processes ("process"), Docker ("docker"), or both ("auto": processes, and Docker when it answers).

    ``--runtime docker`` registers Docker only: a node that allows containers
    only never runs a job as a host process (the service does not place one there).
    Host processes get a cgroup each (``GPUQ_CGROUP_PARENT``) where the host
    lets the agent write one, and run as ``GPUQ_JOB_USER`` when the agent is root;
    both are logged here, at start.
    """
    from workers.gpu.mps import mps_owner
    from workers.runtime import cgroups, jobuser
    from workers.runtime.process import ProcessRuntime

    if runtime not in ("auto", "docker", "process"):
        raise ValueError(f"unknown runtime {runtime!r} (auto, docker or process)")
    runtimes: dict = {}
    user = None
    if runtime in ("auto", "process"):
        probe = cgroups.probe(os.environ.get("GPUQ_CGROUP_PARENT") or cgroups.DEFAULT_PARENT)
        if probe.mode == cgroups.ENFORCED:
            log.info("process jobs: limits enforced (%s)", probe.note)
        else:
            log.warning("process jobs: limits are env-only, NOT enforced: %s", probe.note)
        try:
            user = jobuser.resolve()
        except jobuser.JobUserError as exc:
            raise ValueError(str(exc)) from exc
        (log.info if user.switch else log.warning)("process jobs: %s", user.note)
        pids_max = int(os.environ.get("GPUQ_PIDS_MAX") or cgroups.DEFAULT_PIDS_MAX)
    # MPS (block jobs): one owner for both runtimes; simulated GPUs have no daemons (limits in the env only)
    mps = None if simulated_gpus else mps_owner(data_dir, user, isolate_shm=runtime == "docker")
    if runtime in ("auto", "process"):
        assert user is not None
        runtimes["process"] = ProcessRuntime(work_dir=job_work_root(data_dir, switching_user=user.switch),
                                             state_dir=data_dir / "shims", cgroups=probe, job_user=user,
                                             pids_max=pids_max, mps=mps)
    if runtime in ("auto", "docker"):
        try:
            import docker

            from workers.runtime.docker import DockerRuntime

            client = docker.from_env(timeout=5)
            client.ping()
            runtimes["docker"] = DockerRuntime(client=client, mps=mps, simulated_gpus=simulated_gpus,
                                               state_dir=data_dir / "watchdogs")
        except Exception as exc:  # no engine: image jobs fail with a clear reason
            if runtime == "docker":
                raise ValueError(f"--runtime docker, but no Docker engine answers: {exc}") from exc
            log.info("no Docker engine (%s): jobs with an image will fail on this node", exc.__class__.__name__)
    return runtimes


def start_agent(
    *,
    server: str,
    token: str,
    broker: dramatiq.Broker,
    runtime: str,
    node_name: str | None,
    simulate_gpus: str | None,
    data_dir: Path,
    heartbeat_s: float = 5.0,
    sample_interval_s: float = 30.0,
    tls_cert: Path | None = None,
    in_process: bool = False,
) -> LocalAgent:
    """Build, register and start an agent and its dramatiq worker.

    ``in_process``: the agent of ``gpuq serve``, inside the server it talks to; it never self-fences (a slow
    answer from its own server under load is not a lost service: fencing killed running jobs).
    """
    from workers.actors import register_agent, start_worker
    from workers.agent import Agent
    from workers.client import ServiceClient
    from workers.inventory import SimulationSpecError, host_inventory

    runtimes = make_runtimes(runtime, data_dir, simulated_gpus=bool(simulate_gpus))
    try:
        inventory = host_inventory(node_name=node_name, simulate=simulate_gpus, runtimes=sorted(runtimes),
                                   limits=getattr(runtimes.get("process"), "limits", "enforced"))  # containers: Docker
    except SimulationSpecError as exc:
        raise ValueError(str(exc)) from exc
    http = None
    if tls_cert is not None:  # the server's own agent trusts exactly the certificate it serves
        import ssl

        import httpx

        pinned = ssl.create_default_context(cafile=str(tls_cert))
        pinned.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
        pinned.check_hostname = False  # it dials its own listen address, which the certificate may not name
        http = httpx.Client(base_url=server, timeout=10.0, verify=pinned)
    client = ServiceClient(server, token, http=http)
    agent = Agent(client=client, runtimes=runtimes, inventory=inventory, work_dir=data_dir, heartbeat_s=heartbeat_s,
                  sample_interval_s=sample_interval_s)
    agent.lease.self_fence = not in_process
    register_agent(agent)
    agent.start()
    worker = start_worker(broker, inventory.node_name)
    return LocalAgent(agent, worker, inventory.node_name)


@dataclass
class EmbeddedServer:
    """The whole of gpuq in one process; ``start`` returns once it serves and its agent is registered."""

    settings: Settings
    ctx: ServiceContext | None = None
    server: uvicorn.Server | None = None
    local_agent: LocalAgent | None = None
    admin_token_path: Path | None = None
    # one of --api-processes' replicas after the first: the first migrated, wrote the tokens, runs the agent
    replica: bool = False
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> EmbeddedServer:
        settings = self.settings
        # A request crosses threads (event loop, pool threads) several times while SQLite's writer lock is held;
        # each crossing waited up to the 5 ms default switch interval behind a busy thread: 1 ms keeps it short.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        if settings.simulate_gpus:
            from workers.inventory import SimulationSpecError, parse_simulation

            try:
                parse_simulation(settings.simulate_gpus, node_name="check")
            except SimulationSpecError as exc:
                raise ValueError(str(exc)) from exc
        # several API processes: admission runs in a process of its own (``replicas``); these only relay wakes
        self.ctx = ServiceContext.build(settings, admits=settings.api_processes <= 1)
        agent_token = ""
        if not self.replica:
            self.admin_token_path, agent_token = prepare(settings.effective_database_url, settings.data_dir,
                                                         self.ctx.sessions, node_name=settings.node_name,
                                                         admin_lifetime_s=settings.token_lifetime_s)
        app = create_app(self.ctx)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                access_log=False, lifespan="on",
                                # agents heartbeat every few seconds: keep their connections open longer than
                                # that, so a heartbeat never races the server closing its kept-alive connection
                                timeout_keep_alive=30,
                                ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
                                ssl_keyfile=str(settings.tls_key) if settings.tls_key else None)
        self.server = uvicorn.Server(config)
        # Several API processes: each listens on a socket of its own on the one port (replicas.py).
        sockets = ([replicas.listening_socket(settings.host, settings.port)] if settings.api_processes > 1
                   else None)
        # The caller owns signals (uvicorn only captures them on the main thread; this runs on another).
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": sockets}, name="gpuq-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ValueError(f"could not listen on {settings.host}:{settings.port}")
            time.sleep(0.02)
        if settings.runs_local_agent and not self.replica:
            self.local_agent = start_agent(
                server=f"{settings.scheme}://{settings.host}:{settings.port}", token=agent_token,
                tls_cert=settings.tls_cert,
                broker=self.ctx.dispatcher.broker, runtime=settings.runtime, node_name=settings.node_name,
                simulate_gpus=settings.simulate_gpus, data_dir=settings.data_dir / "agent",
                heartbeat_s=settings.heartbeat_interval_s, sample_interval_s=settings.sample_interval_s,
                in_process=True,
            )
        warm_partitioner()
        return self

    def stop(self, *, stop_jobs: bool = False) -> None:
        """Stop admitting first (no launch may start during the shutdown), then the agent, then HTTP.

        Running jobs go on under their shims unless ``stop_jobs``: the restarted
        server's agent re-adopts them within the lease (half of it, before a shim fences).
        """
        if self.ctx is not None:
            self.ctx.admitter.stop()
        if self.local_agent is not None:
            self.local_agent.stop(stop_jobs=stop_jobs)
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.ctx is not None:
            self.ctx.engine.dispose()


def warm_partitioner() -> None:
    """Compile (or load cached) numba kernels in the background, never blocking start-up."""
    def warm() -> None:
        try:
            from partitioner.place import warmup
        except ImportError:
            return
        try:
            warmup()
        except Exception:  # only a speed concern
            log.exception("partitioner warm-up failed")
        # Everything loaded so far (modules, numba's compiled kernels, the app) lives as long as the
        # process: move it out of the collector's generations, so a full collection under load no
        # longer walks it (the submit storm's latency tail).
        gc.collect()
        gc.freeze()

    threading.Thread(target=warm, name="gpuq-warmup", daemon=True).start()


def wait_for_signal(tick: Callable[[], None] | None = None) -> None:
    """Until SIGINT or SIGTERM, calling ``tick`` twice a second (the replica supervisor's check)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if tick is not None:
            tick()


def configure_logging() -> None:
    """INFO to stderr: one line per job transition (``gpuq.jobs``), warnings and errors, and not every request.

    The HTTP client's own INFO line per request is dropped: the local agent's
    heartbeats, log shipping and samples were almost all of the log.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_server(settings: Settings) -> None:
    why = replicas.refusal(settings)
    if why is not None:
        raise ValueError(why)
    configure_logging()
    embedded = EmbeddedServer(settings).start()
    # the other API processes start once the first serves: it migrated and wrote the tokens they read
    others = replicas.Replicas(settings).start() if settings.api_processes > 1 else None
    url = f"{settings.scheme}://{settings.host}:{settings.port}"
    print(f"gpuq serving on {url}  (dashboard: {url}/ui, API docs: {url}/docs)", flush=True)
    # Where the CLI finds this server (its --port, its --data-dir): queue_service/cli_config.py.
    written = cli_config.record(settings.data_dir, cli_config.client_url(settings.host, settings.port, settings.scheme),
                                embedded.admin_token_path)
    print(f"client config: {', '.join(map(str, written)) or 'not written'} (the CLI follows it)", flush=True)
    print(f"database: {settings.effective_database_url}   broker: {settings.broker_url}", flush=True)
    print(f"admin token: {embedded.admin_token_path} (mode 0600; the CLI reads it when it talks to this server)",
          flush=True)
    if embedded.local_agent is not None:
        inv = embedded.local_agent.agent.inventory
        gpus = ", ".join(f"{g.model}" for g in inv.gpus) or f"none ({inv.gpu_note})"
        print(f"local agent: node {inv.node_name}, {inv.cpus} CPUs, GPUs: {gpus} [{inv.gpu_source}]", flush=True)
    if others is not None:
        print(f"API processes: {settings.api_processes} on port {settings.port}, and admission in a process of "
              "its own", flush=True)
    try:
        wait_for_signal(others.check if others is not None else None)
    finally:
        print("gpuq: shutting down", flush=True)
        if others is not None:
            others.stop()
        embedded.stop()


def run_agent(*, server: str, token: str, broker_url: str, runtime: str, node_name: str | None,
              simulate_gpus: str | None, data_dir: Path, sample_interval_s: float = 30.0) -> None:
    from queue_service.dispatch import make_broker

    configure_logging()
    if broker_url.startswith("memory://"):
        raise ValueError("a separate agent needs a shared broker: --broker-url redis://host:6379/0")
    local = start_agent(server=server, token=token, broker=make_broker(broker_url), runtime=runtime,
                        node_name=node_name, simulate_gpus=simulate_gpus, data_dir=data_dir,
                        sample_interval_s=sample_interval_s)
    print(f"gpuq agent for node {local.node_name} connected to {server}", flush=True)
    try:
        wait_for_signal()
    finally:
        local.stop()

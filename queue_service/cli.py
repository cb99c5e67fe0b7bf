"""The ``gpuq`` command: serve, agent, submit, jobs, show, logs, cancel, admin, simulate."""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from typer._click.core import Context as ClickContext  # typer ships its own click: use its types
from typer._click.core import ParameterSource
from typer._click.exceptions import UsageError

from queue_service import cli_config, cli_script
from queue_service.services import arrays
from queue_service.settings import Settings
from queue_service.sizes import parse_size_mib

app = typer.Typer(help="gpuq: a GPU batch job queue for bare-metal and Docker GPU hosts.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
admin_app = typer.Typer(help="Admin commands: tokens and projects.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
project_app = typer.Typer(help="Projects.", no_args_is_help=True)
admin_app.add_typer(token_app, name="token")
admin_app.add_typer(project_app, name="project")
app.add_typer(admin_app, name="admin")

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
ServerOpt = Annotated[str | None, typer.Option("--server", help="API URL (default: GPUQ_SERVER_URL or local)")]
TokenOpt = Annotated[str | None, typer.Option("--token",
                                              help="API token (default: GPUQ_TOKEN or the local admin token)")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"gpuq: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


class Api:
    """A thin REST client with readable errors."""

    def __init__(self, server: str | None, token: str | None) -> None:
        settings = Settings()
        record = None
        url = server or settings.server_url
        if url is None:  # the server `gpuq serve` recorded (queue_service/cli_config.py says the order)
            record = cli_config.find(settings.data_dir if "GPUQ_DATA_DIR" in os.environ else None)
            url = record.server_url if record else settings.effective_server_url
        self.base = url.rstrip("/")
        self.token = token or settings.token or self._local_token(settings, record)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=30)

    @staticmethod
    def _local_token(settings: Settings, record: cli_config.ServerRecord | None) -> str | None:
        from queue_service.bootstrap import ADMIN_TOKEN_FILE, read_secret

        if record is not None and record.token_file:
            return read_secret(Path(record.token_file))
        return read_secret(settings.data_dir / ADMIN_TOKEN_FILE)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the gpuq server at {self.base} ({exc.__class__.__name__}); is `gpuq serve` running?")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            hint = " (set --token or GPUQ_TOKEN)" if response.status_code == 401 else ""
            fail(f"{response.status_code}: {detail}{hint}")
        return response.json()


def _table(rows: list[list[str]], headers: list[str]) -> str:
    if rows:
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    else:
        widths = [len(h) for h in headers]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _resources_text(r: dict) -> str:
    if r.get("mig"):
        return f"mig {r['mig']}" + (f" x{r['mig_count']}" if r.get("mig_count", 1) > 1 else "")
    if r.get("blocks"):
        return f"{r['blocks']} blocks, {r['gpu_memory_mib']} MiB"
    gpus = r.get("gpus") or 0
    text = f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "cpu only"
    return text + (f" x{r['replicas']}" if r.get("replicas", 1) > 1 else "")


def _print(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        typer.echo(human(data))


# -- server and agent -----------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="SQLite database, tokens, logs")] = None,
    simulate_gpus: Annotated[str | None, typer.Option(help="declare GPUs, e.g. h100-80gb:2,a100-40gb:1")] = None,
    database_url: Annotated[str | None, typer.Option(help="e.g. postgresql://user@host/db")] = None,
    broker_url: Annotated[str | None, typer.Option(help="memory:// or redis://host:6379/0")] = None,
    local_agent: Annotated[bool | None, typer.Option("--local-agent/--no-local-agent",
                                                        help="run an agent for this host in-process")] = None,
    node_name: Annotated[str | None, typer.Option(help="name of the local node")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve HTTPS: PEM certificate (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="the certificate's PEM private key")] = None,
) -> None:
    """Run the API, the admitter and (by default) an agent for this host, in one process."""
    given: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir, "simulate_gpus": simulate_gpus,
                             "database_url": database_url, "broker_url": broker_url, "local_agent": local_agent,
                             "node_name": node_name, "tls_cert": tls_cert, "tls_key": tls_key}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # noqa: BLE001 - a settings error is the user's input
        fail(f"bad settings: {exc}")
    from queue_service.embedded import run_server

    try:
        run_server(settings)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def agent(
    server: Annotated[str, typer.Option(help="the gpuq API URL")],
    token: Annotated[str, typer.Option(help="a token with role agent", envvar="GPUQ_TOKEN")],
    broker_url: Annotated[str, typer.Option(help="redis://host:6379/0")],
    runtime: Annotated[str, typer.Option(help="auto (process + Docker if reachable), docker or process")] = "auto",
    node_name: Annotated[str | None, typer.Option(help="default: the hostname")] = None,
    simulate_gpus: Annotated[str | None, typer.Option(help="declare GPUs instead of NVML")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="logs and work directories")] = None,
) -> None:
    """Run a node agent: register this host and run what the service sends it."""
    from queue_service.embedded import run_agent

    try:
        settings = Settings()  # GPUQ_* from the environment: the data dir, GPUQ_SAMPLE_INTERVAL_S
        run_agent(server=server, token=token, broker_url=broker_url, runtime=runtime, node_name=node_name,
                  simulate_gpus=simulate_gpus, data_dir=data_dir or settings.data_dir / "agent",
                  sample_interval_s=settings.sample_interval_s)
    except ValueError as exc:
        fail(str(exc))


# -- jobs -------------------------------------------------------------------------
FINAL = ("succeeded", "failed", "cancelled", "timed_out")
ID_LENGTH = 20  # queue_service.db.base.new_id: 80 bits as hex; anything shorter is a prefix


def _resolve(api: Api, job_id: str) -> str:
    """A full job id from a unique prefix (``3f1c``); a full id is used as given."""
    if len(job_id) >= ID_LENGTH or not all(c in "0123456789abcdefABCDEF" for c in job_id):
        return job_id
    found = api.call("GET", "/v1/jobs", params={"id_prefix": job_id, "limit": 10})["data"]
    if not found:
        fail(f"no job id starts with {job_id!r} (among the jobs you can see)")
    if len(found) > 1:
        shown = ", ".join(j["id"] for j in found[:5]) + (", ..." if len(found) > 5 else "")
        fail(f"{job_id!r} is the start of {len(found)} job ids ({shown}); give more of it")
    return str(found[0]["id"])


@dataclass
class _Submit:
    """The ``gpuq submit`` / ``gpuq run`` flags, as given (None: not given)."""

    gpus: int | None = None
    mig: str | None = None
    mig_count: int | None = None
    blocks: int | None = None
    gpu_memory: str | None = None
    gpu_model: list[str] | None = None
    cpus: float | None = None
    memory: str | None = None
    replicas: int | None = None
    image: str | None = None
    name: str | None = None
    project: str | None = None
    priority_class: str | None = None
    time_limit: str | None = None
    env: list[str] | None = None
    chdir: str | None = None
    requeue: bool | None = None
    after: list[str] | None = None
    array: str | None = None


def _given(ctx: ClickContext, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``ctx`` that were given on its command line (not defaults)."""
    return {k: v for k, v in params.items() if k in _Submit.__dataclass_fields__
            and ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}


def _script_flags(ctx: ClickContext, path: Path) -> dict[str, Any]:
    """The flags of the script's ``#GPUQ`` lines (later lines win; lists add up); bad lines name line and flag."""
    try:
        lines = cli_script.directives(path)
    except cli_script.ScriptError as exc:
        fail(str(exc))
    command = ctx.command
    merged: dict[str, Any] = {}
    for d in lines:
        try:
            sub = command.make_context(ctx.info_name, list(d.args), parent=ctx.parent, resilient_parsing=False)
        except UsageError as exc:
            fail(f"{path}:{d.line_no}: {d.text!r}: {exc.format_message()}")
        if sub.args:
            fail(f"{path}:{d.line_no}: {d.text!r}: {sub.args[0]!r} is not a gpuq submit flag "
                 f"(directives take flags only, e.g. #GPUQ --gpus 1 --time-limit 2h)")
        flags = _given(sub, sub.params)
        try:  # the values parsed later, checked here so the error names this line
            for key, check in (("time_limit", cli_script.parse_duration_s), ("gpu_memory", parse_size_mib),
                               ("memory", parse_size_mib), ("array", arrays.parse)):
                if key in flags:
                    check(flags[key])
        except ValueError as exc:
            fail(f"{path}:{d.line_no}: {d.text!r}: --{key.replace('_', '-')}: {exc}")
        for key, value in flags.items():
            merged[key] = [*merged.get(key, []), *value] if isinstance(value, list) else value
    return merged


def _job_body(flags: _Submit, command: list[str]) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body from the flags; a flag that does not parse is a CLI error naming it."""
    resources: dict[str, Any] = {}
    for key in ("gpus", "mig", "mig_count", "blocks", "cpus", "replicas"):
        if getattr(flags, key) is not None:
            resources[key] = getattr(flags, key)
    try:
        if flags.gpu_memory is not None:
            resources["gpu_memory_mib"] = parse_size_mib(flags.gpu_memory)
        if flags.memory is not None:
            resources["memory_mib"] = parse_size_mib(flags.memory)
        time_limit_s = None if flags.time_limit is None else cli_script.parse_duration_s(flags.time_limit)
    except ValueError as exc:
        fail(str(exc))
    if not any(k in resources for k in ("gpus", "mig", "blocks")):
        resources["gpus"] = 0
    if flags.gpu_model:
        resources["gpu_models"] = flags.gpu_model
    env_dict = {}
    for item in flags.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--env wants NAME=VALUE, got {item!r}")
        env_dict[key] = value
    if flags.chdir is not None:
        workdir: str | None = str(Path(flags.chdir).expanduser().absolute())
    else:  # Slurm's convention: where you submitted from (an image job keeps the image's WORKDIR)
        workdir = None if flags.image else os.getcwd()
    body = {"name": flags.name or "job", "project": flags.project or "default", "command": command, "env": env_dict,
            "resources": resources, "image": flags.image, "priority_class": flags.priority_class,
            "time_limit_s": time_limit_s, "workdir": workdir, "requeue": flags.requeue, "array": flags.array,
            "depends_on": [_dependency(a) for a in flags.after] if flags.after else None}
    return {k: v for k, v in body.items() if v is not None}


AFTER_CONDITIONS = ("ok", "notok", "any")


def _dependency(text: str) -> dict[str, str]:
    """``JOB[:ok|notok|any]`` (``--after``) as a ``depends_on`` item; JOB may still be a prefix (see ``_resolve``)."""
    job_id, sep, condition = text.strip().partition(":")
    condition = condition if sep else "ok"
    if not job_id or condition not in AFTER_CONDITIONS:
        fail(f"--after wants JOB[:ok|notok|any], got {text!r}")
    return {"job_id": job_id, "condition": condition}


def _resolve_dependencies(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """The body with each ``--after`` job resolved from its prefix; an array's id stands for all its tasks."""
    if not body.get("depends_on"):
        return body
    resolved: list[dict[str, str]] = []
    for dep in body["depends_on"]:
        job = api.call("GET", f"/v1/jobs/{_resolve(api, dep['job_id'])}")
        ids = [t["id"] for t in _array_tasks(api, job)] if job.get("array_id") == job["id"] else [job["id"]]
        resolved += [{"job_id": i, "condition": dep["condition"]} for i in ids if i not in
                     {r["job_id"] for r in resolved if r["condition"] == dep["condition"]}]
    if len(resolved) > MAX_DEPENDENCIES:
        fail(f"--after names {len(resolved)} jobs (an array counts each task); at most {MAX_DEPENDENCIES}")
    return {**body, "depends_on": resolved}


MAX_DEPENDENCIES = 64  # JobCreate.depends_on's max_length


def _array_tasks(api: Api, job: dict, *, live_only: bool = False) -> list[dict]:
    """Every task of the array ``job`` leads (its ``array_id``), by index; ``live_only``: those not final.

    The list has no array filter: live tasks come from the live states' pages, the rest from every page.
    """
    base = {"project": job["project"]}
    found = [j for s in LIVE for j in _all_pages(api, {**base, "state": s})]
    if not live_only:
        found += [j for j in _all_pages(api, base) if j["state"] not in LIVE]
    return sorted((j for j in found if j.get("array_id") == job["array_id"]), key=lambda j: j["array_index"])


def _prepare(ctx: typer.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The job body of ``gpuq submit`` / ``gpuq run``: a job script's directives, then the command line's flags."""
    args = list(ctx.args)
    if not args:
        fail(f"no command given: gpuq {ctx.info_name} [options] -- CMD ARGS...  (or: gpuq {ctx.info_name} job.sh)")
    given = _given(ctx, params)
    if cli_script.is_script(args[0]):
        path = Path(args[0])
        given = {**_script_flags(ctx, path), **given}  # the command line wins
        try:
            command = cli_script.argv(path, args[1:])
        except cli_script.ScriptError as exc:
            fail(str(exc))
        given.setdefault("name", path.stem if cli_script.NAME_OK.match(path.stem) else "job")
    else:
        command = args
    return _job_body(_Submit(**given), command)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    gpus: Annotated[int | None, typer.Option(help="whole GPUs (0 = CPU only)")] = None,
    mig: Annotated[str | None, typer.Option(help="a MIG profile, e.g. 3g.40gb")] = None,
    mig_count: Annotated[int | None, typer.Option(help="MIG instances of that profile (default 1)")] = None,
    blocks: Annotated[int | None, typer.Option(help="share of one GPU in 1%% blocks (1-100)")] = None,
    gpu_memory: Annotated[str | None, typer.Option(help="GPU memory with --blocks, e.g. 10GiB")] = None,
    gpu_model: Annotated[list[str] | None, typer.Option(help="allowed GPU model (repeatable)")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU cores")] = None,
    memory: Annotated[str | None, typer.Option(help="host memory, e.g. 16GiB")] = None,
    replicas: Annotated[int | None, typer.Option(help="a gang: this many replicas, all started or none")] = None,
    image: Annotated[str | None, typer.Option(help="container image (default: run on the host)")] = None,
    name: Annotated[str | None, typer.Option(help="job name (default: the script's name, else 'job')")] = None,
    project: Annotated[str | None, typer.Option(help="project (default: default)")] = None,
    priority_class: Annotated[str | None, typer.Option("--priority-class", help="e.g. production, normal")] = None,
    time_limit: Annotated[str | None, typer.Option(
        "--time-limit", help="wall-clock limit: 3600, 90s, 30m, 2h, 1d or 1:30:00")] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE (repeatable)")] = None,
    chdir: Annotated[str | None, typer.Option(
        "--chdir", help="directory the job starts in on its node (default: this one; an --image job: the image's)")
    ] = None,
    requeue: Annotated[bool | None, typer.Option(
        "--requeue/--no-requeue", help="if preempted or reclaimed: back to the queue (default), or cancelled")] = None,
    after: Annotated[list[str] | None, typer.Option(
        "--after", help="JOB[:ok|notok|any]: start after JOB succeeds (ok, default), fails (notok) or ends (any); "
                        "repeatable; an array id means every task")] = None,
    array: Annotated[str | None, typer.Option(
        "--array", help="a job array, e.g. 0-99%%8: tasks 0..99, at most 8 at once (GPUQ_ARRAY_INDEX)")] = None,
    parsable: Annotated[bool, typer.Option("--parsable", help="print only the job id (JOB=$(gpuq submit ...))")
                        ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job: gpuq submit [flags] -- CMD ARGS..., or gpuq submit [flags] job.sh ARGS (#GPUQ directives)."""
    body = _prepare(ctx, locals())
    api = Api(server, token)
    job = api.call("POST", "/v1/jobs", json=_resolve_dependencies(api, body))
    if parsable and not as_json:
        typer.echo(job["id"])
        return
    _print(job, as_json, lambda j: f"submitted {_submitted_text(j, body)} ({j['state']}: "
                                   f"{_resources_text(j['resources'])})")


def _submitted_text(job: dict, body: dict[str, Any]) -> str:
    if job.get("array_id"):
        return f"array {job['array_id']} ({len(arrays.parse(body['array']).indices)} tasks, {body['array']})"
    return str(job["id"])


def run(ctx: typer.Context, **params: Any) -> None:
    """Submit, wait in the queue showing why, stream stdout/stderr, exit with the job's exit code (like srun).

    Ctrl-C (or SIGTERM) cancels the job. Takes every ``gpuq submit`` flag and job scripts.
    """
    body = _prepare(ctx, params)
    if body.get("array"):
        fail("gpuq run follows one job; submit an array with gpuq submit --array")
    api = Api(params.get("server"), params.get("token"))
    job = api.call("POST", "/v1/jobs", json=_resolve_dependencies(api, body))
    raise typer.Exit(_attend(api, job["id"], quiet=bool(params.get("as_json"))))


run.__signature__ = inspect.signature(submit, eval_str=True)  # type: ignore[attr-defined]  # the same flags as submit
app.command(name="run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(run)


def _exit_code(job: dict) -> int:
    """What ``gpuq run`` exits with: the job's code; 1 for a job that ended without success or code."""
    if job["state"] == "succeeded":
        return 0
    code = job.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


def _attend(api: Api, job_id: str, *, quiet: bool = False, poll_s: float = 0.5) -> int:
    """Follow a job to its end: its waiting reason on stderr when it changes, then its output; its exit code."""
    def note(text: str) -> None:
        if not quiet:
            typer.echo(f"gpuq: {text}", err=True)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    offsets = {"stdout_offset": 0, "stderr_offset": 0}
    said = ""
    try:
        note(f"job {job_id} submitted")
        while True:
            job = api.call("GET", f"/v1/jobs/{job_id}")
            state = job["state"]
            if state in ("queued", "admitted"):
                line = f"{state}: {job['reason']}" if job["reason"] else state
                if line != said:
                    note(f"job {job_id} {line}")
                    said = line
                time.sleep(poll_s)
                continue
            if said != "running" and state == "running":
                note(f"job {job_id} running")
                said = "running"
            chunk = api.call("GET", f"/v1/jobs/{job_id}/logs", params=offsets)
            sys.stdout.write(chunk["stdout"])
            sys.stderr.write(chunk["stderr"])
            sys.stdout.flush()
            sys.stderr.flush()
            offsets = {"stdout_offset": chunk["stdout_offset"], "stderr_offset": chunk["stderr_offset"]}
            if state in FINAL and chunk["final"] and not chunk["stdout"] and not chunk["stderr"]:
                if state != "succeeded":
                    code = "" if job["exit_code"] is None else f", exit code {job['exit_code']}"
                    note(f"job {job_id} {state}{code}" + (f": {job['reason']}" if job["reason"] else ""))
                return _exit_code(job)
            if not chunk["stdout"] and not chunk["stderr"]:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        api.call("POST", f"/v1/jobs/{job_id}/cancel")
        note(f"job {job_id} cancelled (interrupted)")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


LIVE = ("running", "admitted", "queued")


def _all_pages(api: Api, params: dict[str, Any], cap: int = 10_000) -> list[dict]:
    """Every job the list answers for ``params`` (newest first), page after page, up to ``cap``."""
    found: list[dict] = []
    cursor = None
    while len(found) < cap:
        page = api.call("GET", "/v1/jobs", params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})})
        found += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found


def _effective_priority(j: dict) -> int:
    return int(j["priority"] if j.get("priority_override") is None else j["priority_override"])


def queue_order(jobs: list[dict]) -> list[dict]:
    """Running, then admitted, then queued in admission order (higher effective priority, then earlier submit).

    The admitter also orders equal priorities by fair share (``admission/ordering.py``): the positions
    here are the order by priority and submit time, the admitter's when projects' usage is equal.
    """
    def key(j: dict) -> tuple[int, int, str, str]:
        return (LIVE.index(j["state"]) if j["state"] in LIVE else len(LIVE), -_effective_priority(j),
                str(j["submitted_at"]), str(j["id"]))
    return sorted(jobs, key=key)


def _spec_text(indices: list[int], limit: int | None) -> str:
    """``0-99%8``: the indices as runs (steps are not recovered), then the live-task limit."""
    runs: list[str] = []
    ordered = sorted(set(indices))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs) + (f"%{limit}" if limit else "")


STATE_ORDER = ("running", "admitted", "queued", "succeeded", "failed", "cancelled", "timed_out")


def _counts_text(tasks: list[dict]) -> str:
    """``12 running, 80 queued, 8 succeeded``: an array's tasks per state (held ones said apart)."""
    counts: dict[str, int] = {}
    for t in tasks:
        key = "held" if t["state"] == "queued" and t.get("held") else t["state"]
        counts[key] = counts.get(key, 0) + 1
    order = [*STATE_ORDER[:3], "held", *STATE_ORDER[3:]]
    return ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=lambda k: order.index(k) if k in order else 99))


def _rows(ordered: list[dict], finished_tasks: list[dict], *, fold: bool) -> list[list[dict]]:
    """The listing's rows, each a list of jobs: one job, or (folded) every task of an array, at its first place."""
    if not fold:
        return [[j] for j in ordered]
    rows: list[list[dict]] = []
    arrays_at: dict[str, list[dict]] = {}
    for j in ordered:
        array_id = j.get("array_id")
        if array_id is None:
            rows.append([j])
        elif array_id in arrays_at:
            arrays_at[array_id].append(j)
        else:
            arrays_at[array_id] = [j]
            rows.append(arrays_at[array_id])
    seen = {j["id"] for j in ordered}
    for t in finished_tasks:
        if t.get("array_id") in arrays_at and t["id"] not in seen:
            arrays_at[t["array_id"]].append(t)
    return rows


@app.command()
def jobs(
    project: Annotated[str | None, typer.Option(help="only this project")] = None,
    state: Annotated[str | None, typer.Option(help="only this state")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="finished jobs too (newest first, after the live ones)")
                        ] = False,
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 50,
    wide: Annotated[bool, typer.Option("--wide", help="full reasons (no 60-character cut)")] = False,
    tasks: Annotated[bool, typer.Option("--tasks", help="one row per array task (default: one row per array)")
                     ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs in queue order: running, admitted, then the queue with its position, priority and class.

    An array is one row, ``ID[0-99%8]``, with its tasks counted per state (``--tasks``: a row each).
    """
    api = Api(server, token)
    base = {"project": project} if project else {}
    if state:
        found = _all_pages(api, {**base, "state": state})
    else:
        found = [j for s in LIVE for j in _all_pages(api, {**base, "state": s})]
        if show_all:
            found += [j for j in _all_pages(api, base) if j["state"] not in LIVE]
    ordered = queue_order(found)
    fold = not tasks and not state
    finished_tasks: list[dict] = []
    if fold and not show_all and any(j.get("array_id") for j in ordered):  # the counts include finished tasks
        finished_tasks = [j for j in _all_pages(api, base) if j["state"] not in LIVE and j.get("array_id")]
    positions: dict[str, int] = {}
    for j in ordered:
        if j["state"] == "queued":
            positions[j["id"]] = len(positions) + 1
    rows = _rows(ordered, finished_tasks, fold=fold)
    shown_rows = rows[:limit]
    shown = [j for row in shown_rows for j in row if j["id"] in {o["id"] for o in ordered}]
    data = {"data": shown, "count": len(shown_rows), "total": len(rows)}

    def line(row: list[dict]) -> list[str]:
        j = row[0]
        position = next((str(positions[t["id"]]) for t in row if t["id"] in positions), "")
        if fold and j.get("array_id"):
            limit_of = j.get("array_limit")
            label = f"{j['array_id']}[{_spec_text([t['array_index'] for t in row], limit_of)}]"
            waiting = next((t["reason"] for t in row if t["state"] == "queued" and t["reason"]), "")
            state_text, exit_text, reason = _counts_text(row), "", waiting
        else:
            label, state_text = j["id"], j["state"] + (" (held)" if j["held"] else "")
            exit_text, reason = "" if j["exit_code"] is None else str(j["exit_code"]), j["reason"]
        reason = reason if wide or len(reason) <= 60 else reason[:59] + "…"
        return [position, label, j["name"], j["project"], j["priority_class"], str(_effective_priority(j)),
                state_text, _resources_text(j["resources"]), exit_text, reason]

    def human(d: dict) -> str:
        text = _table([line(row) for row in shown_rows],
                      ["pos", "id", "name", "project", "class", "prio", "state", "resources", "exit", "reason"])
        if d["count"] < d["total"]:
            text += f"\nshowing {d['count']} of {d['total']} (--limit N for more)"
        return text

    _print(data, as_json, human)


def _elapsed(j: dict) -> float | None:
    from datetime import datetime

    if not j.get("started_at") or not j.get("finished_at"):
        return None
    started, finished = (datetime.fromisoformat(str(j[k]).replace("Z", "+00:00"))
                         for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@app.command()
def history(
    project: Annotated[str | None, typer.Option(help="only this project")] = None,
    limit: Annotated[int, typer.Option(help="at most this many jobs, newest first")] = 50,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Finished jobs (like sacct): elapsed time, exit code, GPU-hours and cost (from the usage report)."""
    api = Api(server, token)
    base = {"project": project} if project else {}
    finished = sorted((j for s in FINAL for j in _all_pages(api, {**base, "state": s})),
                      key=lambda j: str(j["finished_at"] or ""), reverse=True)[:limit]
    usage: dict[str, dict] = {}
    starts = [str(j["started_at"]) for j in finished if j.get("started_at")]
    if starts:
        path = f"/v1/projects/{project}/usage" if project else "/v1/usage"
        report = api.call("GET", path, params={"group_by": "job", "start": min(starts)})
        usage = {r["key"]: r for r in report["rows"]}
    rows = []
    for j in finished:
        u = usage.get(j["id"], {})
        j["elapsed_s"] = _elapsed(j)
        j["gpu_equivalent_hours"] = u.get("gpu_equivalent_hours", 0.0)
        j["cost"] = u.get("cost", 0.0)
        rows.append(j)

    def human(js: list) -> str:
        return _table([[j["id"], j["name"], j["project"], j["state"], "" if j["exit_code"] is None else j["exit_code"],
                        _duration_text(j["elapsed_s"]), f"{j['gpu_equivalent_hours']:.2f}", f"{j['cost']:.2f}",
                        str(j["finished_at"] or "")[:19]] for j in js],
                      ["id", "name", "project", "state", "exit", "elapsed", "GPU h", "cost", "finished"])

    _print(rows, as_json, human)


@app.command()
def show(job_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """One job in full, with its timeline (every transition, oldest first)."""
    api = Api(server, token)
    job_id = _resolve(api, job_id)
    job = api.call("GET", f"/v1/jobs/{job_id}")
    job["events"] = api.call("GET", f"/v1/jobs/{job_id}/events")["data"]

    def human(j: dict) -> str:
        lines = [f"{k}: {j[k]}" for k in ("id", "name", "project", "state", "reason", "exit_code", "image",
                                          "priority_class", "time_limit_s", "attempt", "submitted_at",
                                          "admitted_at", "started_at", "finished_at")]
        lines.insert(4, f"resources: {_resources_text(j['resources'])}")
        lines.append(f"command: {json.dumps(j['command'])}")
        for a in j["allocation"]:
            what = a["kind"] if a["kind"] != "blocks" else f"{a['blocks']} blocks, {a['gpu_memory_mib']} MiB"
            lines.append(f"allocation: node {a['node']} gpu {a['gpu_uuid'] or '-'} ({what})")
        lines.append("timeline:")
        for e in j["events"]:
            moved = f"{e['from_state'] or 'new'} -> {e['to_state']}"
            why = f" [{e['cause']}]" if e["cause"] else ""
            words = f": {e['reason']}" if e["reason"] else ""
            lines.append(f"  {e['at']}  #{e['attempt']}  {e['event']:<8} {moved:<22} by {e['actor']}{why}{words}")
        return "\n".join(lines)

    _print(job, as_json, human)


@app.command()
def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a job's stdout and stderr (stderr goes to stderr)."""
    api = Api(server, token)
    job_id = _resolve(api, job_id)
    offsets = {"stdout_offset": 0, "stderr_offset": 0}
    while True:
        chunk = api.call("GET", f"/v1/jobs/{job_id}/logs", params=offsets)
        if as_json and not follow:
            typer.echo(json.dumps(chunk, indent=2))
            return
        sys.stdout.write(chunk["stdout"])
        sys.stderr.write(chunk["stderr"])
        sys.stdout.flush()
        offsets = {"stdout_offset": chunk["stdout_offset"], "stderr_offset": chunk["stderr_offset"]}
        if not follow or (chunk["final"] and not chunk["stdout"] and not chunk["stderr"]):
            return
        time.sleep(0.5)


@app.command()
def cancel(
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB...", help="job ids or unique id prefixes")],
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Cancel jobs in any non-final state (a final job is left as it is); an array's id cancels every task.

    ``ID_N`` is task N of the array ``ID`` alone (Slurm's ``scancel 1234_5``).
    """
    api = Api(server, token)
    done = []
    for given in job_ids:
        array_part, sep, index = given.partition("_")
        job = api.call("GET", f"/v1/jobs/{_resolve(api, array_part if sep else given)}")
        if sep:
            if job.get("array_id") is None or not index.isdigit():
                fail(f"{given!r}: ID_N names task N of an array, and {job['id']} is not an array")
            task = next((t for t in _array_tasks(api, job) if t["array_index"] == int(index)), None)
            if task is None:
                fail(f"array {job['array_id']} has no task {index}")
            targets = [task["id"]]
        elif job.get("array_id") == job["id"]:
            targets = [t["id"] for t in _array_tasks(api, job, live_only=True)] or [job["id"]]
        else:
            targets = [job["id"]]
        done += [api.call("POST", f"/v1/jobs/{target}/cancel") for target in targets]
    _print(done, as_json, lambda js: "\n".join(
        f"{j['id']}: {j['state']}" + (f" ({j['reason']})" if j["reason"] else "") for j in js))


def _holder_text(h: dict) -> str:
    """``alpha/train (3f1c…)`` or ``other project`` for a holding the caller may not see."""
    if h.get("project") is None:
        return "other project"
    return f"{h['project']}/{h.get('job_name') or 'job'} ({str(h.get('job_id') or '')[:8]})"


def _gpu_lines(g: dict) -> list[tuple[str, str]]:
    """(what is free, who holds what) for one GPU, as it is: MIG instances per slot, shares by holder."""
    holders = g.get("holders") or []
    if g["mode"] == "mig":
        by_start = {h["mig_start"]: h for h in holders if h.get("mig_start") is not None}
        slots = [f"{i['profile']}@{i['start']} " + (f"held by {_holder_text(by_start[i['start']])}"
                                                   if i["start"] in by_start else "held" if i["held"] else "free")
                 for i in g.get("mig_instances") or []]
        free = sum(1 for i in g.get("mig_instances") or [] if not i["held"])
        return [(f"{free}/{len(slots)} instances free, {g['free_memory_mib']} MiB", "; ".join(slots) or "no instances")]
    if g["mode"] == "shared":
        who = "; ".join(f"{_holder_text(h)} {h['blocks']} blocks, {h['gpu_memory_mib']} MiB" for h in holders)
        return [(f"{g['free_blocks']}/100 blocks, {g['free_memory_mib']} MiB", who)]
    if g["held_whole"] or holders:
        return [("held", "by " + ", ".join(_holder_text(h) for h in holders) if holders else "")]
    return [(f"free, {g['free_memory_mib']} MiB", "")]


def node_status(n: dict) -> str:
    """``ready``, ``cordoned``, ``draining``, ``down`` or ``not heartbeating``: what the node does with new work."""
    if n["status"] == "ready" and n.get("cordoned"):
        return "cordoned"
    if n["status"] == "ready" and n.get("no_work_reason"):
        return str(n["no_work_reason"])
    return str(n["status"]) + (", cordoned" if n.get("cordoned") and n["status"] != "ready" else "")


@app.command()
def nodes(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Nodes and their GPUs as they are: MIG instances free or held, shares by holder, why a node takes no work."""
    data = Api(server, token).call("GET", "/v1/nodes")

    def human(ns: list) -> str:
        rows = []
        for n in ns:
            why = f"takes no new work ({n['no_work_reason']})" if n.get("no_work_reason") else ""
            note = "; ".join(x for x in (why, n.get("drain_reason", ""), f"limits: {n.get('limits', 'env-only')}",
                                         n["gpu_note"]) if x)
            rows.append([n["name"], node_status(n), f"{n['cpus']} cpus", f"{n['memory_mib']} MiB", "", "", note])
            for g in n["gpus"]:
                for free, who in _gpu_lines(g):
                    rows.append(["", "", "", "", f"gpu{g['index']} {g['model']} ({g['mode']})", free, who])
        return _table(rows, ["node", "status", "cpus", "memory", "gpu", "free", "held by / note"])

    _print(data, as_json, human)


# -- admin ------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin, operator, member, viewer or agent")],
    project: Annotated[list[str] | None, typer.Option(help="project of a member (repeatable)")] = None,
    name: Annotated[str, typer.Option(help="a label")] = "",
    node_name: Annotated[str | None, typer.Option(help="bind an agent token to one node")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an API token (printed once)."""
    body = {"role": role, "name": name, "projects": project or []}
    if node_name:
        body["node_name"] = node_name
    made = Api(server, token).call("POST", "/v1/tokens", json=body)
    _print(made, as_json, lambda t: t["token"])


@token_app.command("list")
def token_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every token: id, role, binding, expiry, last use, revocation (never the secret)."""
    data = Api(server, token).call("GET", "/v1/tokens")
    _print(data, as_json, lambda ts: _table(
        [[t["id"], t["name"], t["role"], ",".join(t["projects"]) or (t["node_name"] or ""),
          str(t["expires_at"] or "never")[:19], str(t["last_used_at"] or "")[:16],
          "revoked" if t["revoked_at"] else ""] for t in ts],
        ["id", "name", "role", "bound to", "expires", "last used", ""]))


@token_app.command("revoke")
def token_revoke(token_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a token: refused from its next request (audited)."""
    revoked = Api(server, token).call("DELETE", f"/v1/tokens/{token_id}")
    _print(revoked, as_json, lambda t: f"revoked {t['id']} ({t['role']} {t['name']})")


@token_app.command("rotate")
def token_rotate(
    data_dir: Annotated[Path | None, typer.Option(help="where admin.token lives (default: GPUQ_DATA_DIR)")] = None,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Replace the admin token in the data directory: a new one is made and written, then the old one revoked."""
    from queue_service.bootstrap import ADMIN_TOKEN_FILE, write_secret

    api = Api(server, token)
    me = api.call("GET", "/v1/tokens/me")
    made = api.call("POST", "/v1/tokens", json={"role": "admin", "name": me["name"] or "admin"})
    path = (data_dir or Settings().data_dir) / ADMIN_TOKEN_FILE
    write_secret(path, made["token"])
    Api(server, made["token"]).call("DELETE", f"/v1/tokens/{me['id']}")
    _print({"id": made["id"], "revoked": me["id"], "token_file": str(path)}, as_json,
           lambda r: f"new admin token {r['id']} in {r['token_file']}; {r['revoked']} revoked")


@project_app.command("create")
def project_create(
    name: str,
    weight: Annotated[float, typer.Option(help="fair-share weight")] = 1.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a project."""
    made = Api(server, token).call("POST", "/v1/projects", json={"name": name, "weight": weight})
    _print(made, as_json, lambda p: f"project {p['name']} created")


@project_app.command("list")
def project_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Projects you can see."""
    data = Api(server, token).call("GET", "/v1/projects")
    _print(data, as_json, lambda ps: "\n".join(p["name"] for p in ps))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []}, add_help_option=False)
def simulate(ctx: typer.Context) -> None:
    """Replay a production trace (openb format) through the placement policies (--mode queue: through
    the whole scheduler in simulated time); see --help."""
    args = list(ctx.args)
    if args[:2] == ["--mode", "queue"] or "--mode=queue" in args[:1]:
        from queue_service.admission.replay_cli import cli as queue_cli

        raise typer.Exit(queue_cli(args[1:] if args[0] == "--mode=queue" else args[2:]))
    if args[:2] == ["--mode", "place"]:
        args = args[2:]
    from partitioner.simulate import cli as simulate_cli

    raise typer.Exit(simulate_cli(args))


@app.command()
def migrate(
    database_url: Annotated[str | None, typer.Option(help="default: GPUQ_DATABASE_URL or the local SQLite")] = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Apply database migrations."""
    from queue_service.db.migrate import upgrade

    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    settings = Settings(**overrides)
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")


# -- billing: usage and prices (issue 6) ---------------------------------------
prices_app = typer.Typer(help="The GPU price catalogue (effective-dated; admins add lists).", no_args_is_help=True)
app.add_typer(prices_app, name="prices")


@app.command()
def usage(
    project: Annotated[str | None, typer.Option(help="one project (default: every project you can see)")] = None,
    month: Annotated[str | None, typer.Option(help="e.g. 2026-11 (default: this month so far)")] = None,
    start: Annotated[str | None, typer.Option(help="ISO start, instead of --month")] = None,
    end: Annotated[str | None, typer.Option(help="ISO end, instead of --month")] = None,
    group_by: Annotated[str, typer.Option(help="day, job, user, gpu_model or project")] = "day",
    csv: Annotated[bool, typer.Option("--csv", help="CSV for finance")] = False,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """GPU-hours, block-hours, MIG-hours, cost and measured busy share."""
    api = Api(server, token)
    path = f"/v1/projects/{project}/usage" if project else "/v1/usage"
    params = {k: v for k, v in (("month", month), ("start", start), ("end", end), ("group_by", group_by)) if v}
    if csv:
        response = api.http.get(path, params=params | {"format": "csv"})
        if response.status_code >= 400:
            fail(f"{response.status_code}: {response.text[:300]}")
        typer.echo(response.text, nl=False)
        return
    data = api.call("GET", path, params=params)

    def human(d: dict) -> str:
        def line(r: dict) -> list[str]:
            busy = "-" if r["busy_share"] is None else f"{r['busy_share']:.0%}"
            return [r["key"], r["project"], f"{r['gpu_hours']:.2f}", f"{r['block_hours']:.2f}",
                    f"{r['mig_hours']:.2f}", f"{r['gpu_equivalent_hours']:.2f}", f"{r['cost']:.2f}", busy]
        head = f"usage {d['start']} .. {d['end']} by {d['group_by']} ({', '.join(d['projects']) or 'no projects'})"
        rows = [line(r) for r in d["rows"]] + [line(d["total"])]
        return head + "\n" + _table(rows, [d["group_by"], "project", "GPU h", "block h", "MIG h", "GPU-eq h",
                                             "cost", "busy"])

    _print(data, as_json, human)


@prices_app.command("list")
def prices_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every price list, with its history."""
    data = Api(server, token).call("GET", "/v1/prices")
    _print(data, as_json, lambda ps: _table(
        [[p["gpu_model"], str(p["effective_from"]), f"{p['gpu_hour']:g}", str(p["block_hour"] or "default"),
          json.dumps(p["mig_profile_hour"]) if p["mig_profile_hour"] else "default", p["created_by"]] for p in ps],
        ["model", "from", "GPU h", "block h", "MIG h", "by"]))


@prices_app.command("set")
def prices_set(
    gpu_model: Annotated[str, typer.Argument(help="e.g. h100-80gb, or * for CPU/RAM of GPU-less nodes")],
    gpu_hour: Annotated[float, typer.Option(help="price of a whole-GPU hour")],
    block_hour: Annotated[float | None, typer.Option(help="default: gpu_hour / 100")] = None,
    gpu_memory_gib_hour: Annotated[float | None, typer.Option(help="GPU memory held beside blocks")] = None,
    mig: Annotated[list[str] | None, typer.Option(help="PROFILE=PRICE, repeatable (default: compute share)")] = None,
    cpu_hour: Annotated[float | None, typer.Option()] = None,
    ram_gib_hour: Annotated[float | None, typer.Option()] = None,
    effective_from: Annotated[str | None, typer.Option(help="ISO time, now or later (default now)")] = None,
    note: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Add a price list (admins); it applies from --effective-from on, never to the past."""
    mig_prices = {}
    for item in mig or []:
        name, _, price = item.partition("=")
        try:
            mig_prices[name] = float(price)
        except ValueError:
            fail(f"--mig wants PROFILE=PRICE, not {item!r}")
    body = {"gpu_model": gpu_model, "gpu_hour": gpu_hour, "block_hour": block_hour,
            "gpu_memory_gib_hour": gpu_memory_gib_hour, "mig_profile_hour": mig_prices, "cpu_hour": cpu_hour,
            "ram_gib_hour": ram_gib_hour, "effective_from": effective_from, "note": note}
    made = Api(server, token).call("POST", "/v1/prices", json={k: v for k, v in body.items() if v is not None})
    _print(made, as_json,
           lambda p: f"prices for {p['gpu_model']} from {p['effective_from']}: {p['gpu_hour']:g}/GPU-hour")


# -- operators --------------------------------------------------------------------
node_app = typer.Typer(help="Node controls: drain, cordon, uncordon, accept.", no_args_is_help=True)
quota_app = typer.Typer(help="Project quotas (whole-GPU equivalents).", no_args_is_help=True)
class_app = typer.Typer(help="Priority classes.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(quota_app, name="quota")
app.add_typer(class_app, name="class")
ReasonOpt = Annotated[str, typer.Option(help="why (kept in the audit log)")]


def _job_line(j: dict) -> str:
    override = "" if j.get("priority_override") is None else f", priority override {j['priority_override']}"
    held = ", held" if j.get("held") else ""
    return f"{j['id']}: {j['state']}{override}{held}" + (f" ({j['reason']})" if j.get("reason") else "")


@app.command()
def priority(
    job_id: str,
    value: Annotated[int | None, typer.Argument(help="the override; omit with --clear")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="remove the override")] = False,
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Override a job's priority (above or below every class)."""
    if value is None and not clear:
        fail("give a priority value, or --clear")
    api = Api(server, token)
    job = api.call("PATCH", f"/v1/jobs/{_resolve(api, job_id)}", json={"priority": None if clear else value,
                                                                        "reason": reason})
    _print(job, as_json, _job_line)


def _job_action(action: str, doc: str) -> None:
    def command(job_id: str, reason: ReasonOpt = "", server: ServerOpt = None, token: TokenOpt = None,
                as_json: JsonOpt = False) -> None:
        api = Api(server, token)
        job = api.call("POST", f"/v1/jobs/{_resolve(api, job_id)}/{action}", json={"reason": reason})
        _print(job, as_json, _job_line)

    command.__doc__ = doc
    app.command(name=action)(command)


_job_action("hold", "Hold a queued job (the admitter skips it).")
_job_action("release", "Release a held job.")
_job_action("top", "Move a queued job to the head of the queue.")


@app.command()
def reclaim(
    job: Annotated[str | None, typer.Option(help="a job id")] = None,
    project: Annotated[str | None, typer.Option(help="every live job of a project")] = None,
    gpu: Annotated[str | None, typer.Option(help="every job on a GPU (UUID)")] = None,
    node: Annotated[str | None, typer.Option(help="every job on a node (it is cordoned)")] = None,
    grace: Annotated[float | None, typer.Option(
        help="seconds between SIGTERM and SIGKILL (default: each job's priority-class grace)")] = None,
    requeue: Annotated[bool, typer.Option("--requeue/--no-requeue", help="requeue, or cancel")] = True,
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Force capacity back: SIGTERM, the grace period, SIGKILL; requeued at their original position."""
    body = {k: v for k, v in {"job": job, "project": project, "gpu": gpu, "node": node}.items() if v}
    if len(body) != 1:
        fail("give exactly one of --job, --project, --gpu, --node")
    api = Api(server, token)
    if job:
        body["job"] = _resolve(api, job)
    answer = api.call("POST", "/v1/reclaim", json={**body, "grace_s": grace, "requeue": requeue,
                                                                  "reason": reason})  # None: the class's grace
    _print(answer, as_json, lambda a: f"reclaiming {len(a['jobs'])} job(s) from {a['kind']} {a['target']}: "
           + (", ".join(a["jobs"]) or "none running"))


def _node_action(action: str, doc: str) -> None:
    def command(name: str, reason: ReasonOpt = "", server: ServerOpt = None, token: TokenOpt = None,
                as_json: JsonOpt = False) -> None:
        answer = Api(server, token).call("POST", f"/v1/nodes/{name}/{action}", json={"reason": reason})
        _print(answer, as_json, lambda a: f"node {a['name']}: {a['status']}" + (", cordoned" if a["cordoned"] else ""))

    command.__doc__ = doc
    node_app.command(name=action)(command)


_node_action("drain", "No new work on the node; running jobs finish.")
_node_action("cordon", "No new work on the node.")
_node_action("uncordon", "Undo drain and cordon.")
_node_action("accept", "Accept a node's held GPU change (more GPUs, other models): admins only, audited.")


@quota_app.command("set")
def quota_set(
    project: str,
    guaranteed: Annotated[float, typer.Option(help="guaranteed whole-GPU equivalents")],
    borrow_limit: Annotated[float | None, typer.Option(help="how far above the guarantee (default: no limit)")] = None,
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a project's guarantee and borrowing limit."""
    q = Api(server, token).call("PUT", f"/v1/projects/{project}/quota",
                                json={"guaranteed": guaranteed, "borrow_limit": borrow_limit, "reason": reason})
    _print(q, as_json, lambda q: f"{q['project']}: guaranteed {q['guaranteed']:g}, borrow limit "
           f"{'none' if q['borrow_limit'] is None else format(q['borrow_limit'], 'g')}, in use {q['in_use']:g}")


@quota_app.command("list")
def quota_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Quotas and what each project holds now."""
    data = Api(server, token).call("GET", "/v1/quotas")
    _print(data, as_json, lambda qs: _table(
        [[q["project"], f"{q['guaranteed']:g}", "-" if q["borrow_limit"] is None else f"{q['borrow_limit']:g}",
          f"{q['in_use']:g}"] for q in qs], ["project", "guaranteed", "borrow limit", "in use"]))


def _limit_text(seconds: int | None) -> str:
    return "-" if seconds is None else _duration_text(seconds)


@class_app.command("list")
def class_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Priority classes, highest first, with the time limit a job gets by default and the most it may ask."""
    data = Api(server, token).call("GET", "/v1/priority-classes")
    _print(data, as_json, lambda cs: _table(
        [[c["name"], c["value"], "yes" if c["preemptible"] else "no", f"{c['grace_s']:g}",
          _limit_text(c.get("default_time_limit_s")), _limit_text(c.get("max_time_limit_s"))] for c in cs],
        ["class", "value", "preemptible", "grace s", "default time", "max time"]))


def _limit_option(text: str | None, flag: str, current: int | None) -> int | None:
    """A time-limit flag: not given keeps ``current``; ``none`` clears it; else a duration (2h, 1:30:00)."""
    if text is None:
        return current
    if text.strip().lower() in ("none", "-", ""):
        return None
    try:
        return cli_script.parse_duration_s(text)
    except ValueError as exc:
        fail(f"{flag}: {exc}")


@class_app.command("set")
def class_set(
    name: str,
    value: Annotated[int | None, typer.Option(help="higher runs first (required for a new class)")] = None,
    preemptible: Annotated[bool | None, typer.Option("--preemptible/--not-preemptible")] = None,
    grace: Annotated[float | None, typer.Option(help="grace period when stopped, seconds (default 30)")] = None,
    default_time_limit: Annotated[str | None, typer.Option(
        "--default-time-limit", help="given to jobs that name none: 2h, 30m, 1:30:00; 'none' clears")] = None,
    max_time_limit: Annotated[str | None, typer.Option(
        "--max-time-limit", help="the most a job may ask: 1d, 12h; 'none' clears")] = None,
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or change a priority class; flags not given keep the class's current values."""
    api = Api(server, token)
    current = next((c for c in api.call("GET", "/v1/priority-classes") if c["name"] == name), None)
    if current is None and value is None:
        fail(f"class {name} does not exist yet: give --value")
    old = current or {"value": value, "preemptible": False, "grace_s": 30.0}
    body = {"value": old["value"] if value is None else value,
            "preemptible": old["preemptible"] if preemptible is None else preemptible,
            "grace_s": old["grace_s"] if grace is None else grace,
            "default_time_limit_s": _limit_option(default_time_limit, "--default-time-limit",
                                                  old.get("default_time_limit_s")),
            "max_time_limit_s": _limit_option(max_time_limit, "--max-time-limit", old.get("max_time_limit_s")),
            "reason": reason}
    c = api.call("PUT", f"/v1/priority-classes/{name}", json=body)
    _print(c, as_json, lambda c: f"class {c['name']}: value {c['value']}, "
           f"{'preemptible' if c['preemptible'] else 'not preemptible'}, grace {c['grace_s']:g} s, "
           f"default time {_limit_text(c.get('default_time_limit_s'))}, "
           f"max time {_limit_text(c.get('max_time_limit_s'))}")


webhook_app = typer.Typer(help="Webhooks: a project's job events POSTed, signed, to a URL.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


@webhook_app.command("add")
def webhook_add(
    project: str,
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the events")],
    event: Annotated[list[str] | None, typer.Option(
        "--event", help="a state to send (repeatable: succeeded, failed, running...; default: every change)")] = None,
    job: Annotated[str | None, typer.Option(help="only this job's events (id or unique prefix)")] = None,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Subscribe URL to PROJECT's job events; the signing secret is printed once."""
    api = Api(server, token)
    body: dict[str, Any] = {"url": url, "events": event or []}
    if job:
        body["job_id"] = _resolve(api, job)
    made = api.call("POST", f"/v1/projects/{project}/webhooks", json=body)
    _print(made, as_json, lambda h: f"webhook {h['id']} -> {h['url']} "
           f"({', '.join(h['events']) or 'every event'}{', job ' + h['job_id'] if h['job_id'] else ''})\n"
           f"secret (shown once; verify the Gpuq-Signature header with it): {h['secret']}")


@webhook_app.command("list")
def webhook_list(project: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """PROJECT's webhooks (never their secrets)."""
    data = Api(server, token).call("GET", f"/v1/projects/{project}/webhooks")
    _print(data, as_json, lambda hs: _table(
        [[h["id"], h["url"], ",".join(h["events"]) or "all", h["job_id"] or "", "yes" if h["active"] else "no",
          h["created_by"], str(h["created_at"])[:19]] for h in hs],
        ["id", "url", "events", "job", "active", "by", "created"]))


@webhook_app.command("rm")
def webhook_rm(project: str, hook_id: str, server: ServerOpt = None, token: TokenOpt = None,
               as_json: JsonOpt = False) -> None:
    """Delete a webhook: nothing more is sent to it."""
    api = Api(server, token)
    response = api.http.request("DELETE", f"/v1/projects/{project}/webhooks/{hook_id}")
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.json().get('detail') if response.content else ''}")
    _print({"id": hook_id, "deleted": True}, as_json, lambda r: f"webhook {r['id']} deleted")


@webhook_app.command("deliveries")
def webhook_deliveries(
    project: str, hook_id: str,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """What was sent to a webhook: each event's status, tries and last answer."""
    data = Api(server, token).call("GET", f"/v1/projects/{project}/webhooks/{hook_id}/deliveries",
                                   params={"limit": limit})
    _print(data, as_json, lambda d: _table(
        [[str(r["event_id"]), r["status"], str(r["attempts"]), "" if r["last_status_code"] is None
          else str(r["last_status_code"]), str(r["delivered_at"] or r["next_attempt_at"])[:19],
          r["last_error"][:60]] for r in d["data"]],
        ["event", "status", "tries", "http", "at", "last error"]))


@app.command()
def audit(
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 50,
    action: Annotated[str | None, typer.Option(help="only this action, e.g. reclaim.node")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log, newest first."""
    params = {k: v for k, v in {"limit": limit, "action": action}.items() if v is not None}
    data = Api(server, token).call("GET", "/v1/audit", params=params)
    _print(data, as_json, lambda page: _table(
        [[a["at"][:19], a["actor"], a["action"], a["target"], a["reason"][:50]] for a in page["data"]],
        ["at", "actor", "action", "target", "reason"]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

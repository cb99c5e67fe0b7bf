"""``gpuq submit`` and ``gpuq run``: a job body from flags and ``#GPUQ`` directives; ``run`` follows it to its end."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.core import Context as ClickContext  # typer ships its own click: use its types
from typer._click.core import ParameterSource
from typer._click.exceptions import UsageError

from queue_service.cli import script
from queue_service.cli.base import (
    FINAL,
    Api,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    app,
    array_tasks,
    emit,
    fail,
    resolve_job,
    resources_text,
)
from queue_service.services import arrays
from queue_service.sizes import parse_size_mib


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
    output: str | None = None
    error: str | None = None
    workload: str | None = None
    label: list[str] | None = None
    volume: list[str] | None = None


def _given(ctx: ClickContext, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``ctx`` that were given on its command line (not defaults)."""
    return {k: v for k, v in params.items() if k in _Submit.__dataclass_fields__
            and ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}


def _script_flags(ctx: ClickContext, path: Path) -> dict[str, Any]:
    """The flags of the script's ``#GPUQ`` lines (later lines win; lists add up); bad lines name line and flag."""
    try:
        lines = script.directives(path)
    except script.ScriptError as exc:
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
            for key, check in (("time_limit", script.parse_duration_s), ("gpu_memory", parse_size_mib),
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
        time_limit_s = None if flags.time_limit is None else script.parse_duration_s(flags.time_limit)
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
            "output": flags.output, "error": flags.error,
            "workload": flags.workload, "labels": _labels(flags.label), "volumes": _volumes(flags.volume),
            "depends_on": [_dependency(a) for a in flags.after] if flags.after else None}
    return {k: v for k, v in body.items() if v is not None}


AFTER_CONDITIONS = ("ok", "notok", "any")


def _labels(items: list[str] | None) -> dict[str, str] | None:
    """``--label KEY=VALUE`` items as the ``labels`` field (None: none given)."""
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--label wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _volumes(items: list[str] | None) -> list[dict[str, Any]] | None:
    """``--volume HOST:CONTAINER[:ro|rw]`` items as the ``volumes`` field (None: none given)."""
    if not items:
        return None
    out = []
    for item in items:
        parts = item.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            fail(f"--volume wants HOST_DIR:CONTAINER_DIR[:ro|rw], got {item!r}")
        out.append({"host_path": parts[0], "container_path": parts[1],
                    "read_only": len(parts) == 2 or parts[2] == "ro"})
    return out


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
        job = api.call("GET", f"/v1/jobs/{resolve_job(api, dep['job_id'])}")
        ids = [t["id"] for t in array_tasks(api, job)] if job.get("array_id") == job["id"] else [job["id"]]
        resolved += [{"job_id": i, "condition": dep["condition"]} for i in ids if i not in
                     {r["job_id"] for r in resolved if r["condition"] == dep["condition"]}]
    if len(resolved) > MAX_DEPENDENCIES:
        fail(f"--after names {len(resolved)} jobs (an array counts each task); at most {MAX_DEPENDENCIES}")
    return {**body, "depends_on": resolved}


MAX_DEPENDENCIES = 64  # JobCreate.depends_on's max_length


def _prepare(ctx: typer.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The job body of ``gpuq submit`` / ``gpuq run``: a job script's directives, then the command line's flags."""
    args = list(ctx.args)
    if not args:
        fail(f"no command given: gpuq {ctx.info_name} [options] -- CMD ARGS...  (or: gpuq {ctx.info_name} job.sh)")
    given = _given(ctx, params)
    if script.is_script(args[0]):
        path = Path(args[0])
        given = {**_script_flags(ctx, path), **given}  # the command line wins
        try:
            command = script.argv(path, args[1:])
        except script.ScriptError as exc:
            fail(str(exc))
        given.setdefault("name", path.stem if script.NAME_OK.match(path.stem) else "job")
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
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="also write stdout to this file on the node: %%j job id, %%A/%%a array id/index, "
                               "%%x name, %%u user, %%N node; relative to --chdir (stderr too unless --error)")
    ] = None,
    error: Annotated[str | None, typer.Option(
        "--error", "-e", help="also write stderr to this file on the node (patterns as --output)")] = None,
    workload: Annotated[str | None, typer.Option(
        "--workload", help="its workload class: training, inference, batch (default), interactive, experiment")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="KEY=VALUE a bill can be grouped by, e.g. feature=search (repeatable, at most 16)")] = None,
    volume: Annotated[list[str] | None, typer.Option(
        "--volume", help="HOST_DIR:CONTAINER_DIR[:ro|rw] to mount (an --image job; the project's allow-list "
                         "decides; default ro; repeatable)")] = None,
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
    emit(job, as_json, lambda j: f"submitted {_submitted_text(j, body)} ({j['state']}: "
                                   f"{resources_text(j['resources'])})")


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
app.command(name="run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(run)

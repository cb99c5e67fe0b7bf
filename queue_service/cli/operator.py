"""Operator commands: priority overrides, hold/release/top, reclaim, quotas, priority classes."""

from __future__ import annotations

from typing import Annotated

import typer

from queue_service.cli import script
from queue_service.cli.base import (
    Api,
    JsonOpt,
    ReasonOpt,
    ServerOpt,
    TokenOpt,
    app,
    emit,
    fail,
    limit_text,
    resolve_job,
    table,
)

quota_app = typer.Typer(help="Project quotas (whole-GPU equivalents).", no_args_is_help=True)


class_app = typer.Typer(help="Priority classes.", no_args_is_help=True)


app.add_typer(quota_app, name="quota")


app.add_typer(class_app, name="class")


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
    job = api.call("PATCH", f"/v1/jobs/{resolve_job(api, job_id)}", json={"priority": None if clear else value,
                                                                        "reason": reason})
    emit(job, as_json, _job_line)


def _job_action(action: str, doc: str) -> None:
    def command(job_id: str, reason: ReasonOpt = "", server: ServerOpt = None, token: TokenOpt = None,
                as_json: JsonOpt = False) -> None:
        api = Api(server, token)
        job = api.call("POST", f"/v1/jobs/{resolve_job(api, job_id)}/{action}", json={"reason": reason})
        emit(job, as_json, _job_line)

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
        body["job"] = resolve_job(api, job)
    answer = api.call("POST", "/v1/reclaim", json={**body, "grace_s": grace, "requeue": requeue,
                                                                  "reason": reason})  # None: the class's grace
    emit(answer, as_json, lambda a: f"reclaiming {len(a['jobs'])} job(s) from {a['kind']} {a['target']}: "
           + (", ".join(a["jobs"]) or "none running"))


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
    emit(q, as_json, lambda q: f"{q['project']}: guaranteed {q['guaranteed']:g}, borrow limit "
           f"{'none' if q['borrow_limit'] is None else format(q['borrow_limit'], 'g')}, in use {q['in_use']:g}")


@quota_app.command("list")
def quota_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Quotas and what each project holds now."""
    data = Api(server, token).call("GET", "/v1/quotas")
    emit(data, as_json, lambda qs: table(
        [[q["project"], f"{q['guaranteed']:g}", "-" if q["borrow_limit"] is None else f"{q['borrow_limit']:g}",
          f"{q['in_use']:g}", _granted_text(q)] for q in qs],
        ["project", "guaranteed", "borrow limit", "in use", "granted"]))


def _granted_text(q: dict) -> str:
    """What capacity grants add to the guarantee now, and when the first ends (``gpuq request capacity``)."""
    if not q.get("granted"):
        return "-"
    return f"+{q['granted']:g} until {str(q['granted_until'])[:16].replace('T', ' ')}"


@class_app.command("list")
def class_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Priority classes, highest first, with the time limit a job gets by default and the most it may ask."""
    data = Api(server, token).call("GET", "/v1/priority-classes")
    emit(data, as_json, lambda cs: table(
        [[c["name"], c["value"], "yes" if c["preemptible"] else "no", f"{c['grace_s']:g}",
          limit_text(c.get("default_time_limit_s")), limit_text(c.get("max_time_limit_s"))] for c in cs],
        ["class", "value", "preemptible", "grace s", "default time", "max time"]))


def _limit_option(text: str | None, flag: str, current: int | None) -> int | None:
    """A time-limit flag: not given keeps ``current``; ``none`` clears it; else a duration (2h, 1:30:00)."""
    if text is None:
        return current
    if text.strip().lower() in ("none", "-", ""):
        return None
    try:
        return script.parse_duration_s(text)
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
    emit(c, as_json, lambda c: f"class {c['name']}: value {c['value']}, "
           f"{'preemptible' if c['preemptible'] else 'not preemptible'}, grace {c['grace_s']:g} s, "
           f"default time {limit_text(c.get('default_time_limit_s'))}, "
           f"max time {limit_text(c.get('max_time_limit_s'))}")

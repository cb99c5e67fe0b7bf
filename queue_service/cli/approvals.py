"""Saying no: approve / deny pending jobs, approval policies, budgets, capacity requests.

    gpuq approvals                                   # the jobs waiting for a decision
    gpuq approve 3f1c --reason "paper deadline" [--expires-in 1d]
    gpuq deny 3f1c --reason "use the spot pool"
    gpuq policy set alpha --max-gpu-hours 64 --whole-node [--self-approval] [--ttl 2d]
    gpuq budget set alpha --amount 400 [--unit gpu_hours|cost] [--mode hard|approval]
    gpuq request capacity --project alpha --gpus 8 --from 2026-12-10 --until 2026-12-17 --reason "..."
    gpuq capacity list | grant ID | refuse ID --reason "..."
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from queue_service.cli import script
from queue_service.cli.base import Api, JsonOpt, ReasonOpt, ServerOpt, TokenOpt, app, emit, fail, resolve_job, table

policy_app = typer.Typer(help="Approval policies: which of a project's jobs wait for an approver.",
                         no_args_is_help=True)
budget_app = typer.Typer(help="Monthly budgets per project (GPU-hours or cost; hard or approval).",
                         no_args_is_help=True)
request_app = typer.Typer(help="Ask for something an admin may refuse.", no_args_is_help=True)
capacity_app = typer.Typer(help="Capacity requests: more guarantee for a period.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(budget_app, name="budget")
app.add_typer(request_app, name="request")
app.add_typer(capacity_app, name="capacity")


def _job_line(j: dict) -> str:
    return f"{j['id']}: {j['state']}" + (f" ({j['reason']})" if j.get("reason") else "")


def _seconds(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return script.parse_duration_s(text)
    except ValueError as exc:
        fail(f"{flag}: {exc}")


def when(text: str, flag: str) -> str:
    """``now``, ``+2h`` / ``+7d`` (from now), or an ISO date or time (UTC unless it says otherwise)."""
    value = text.strip()
    if value.lower() == "now":
        return datetime.now(UTC).isoformat()
    if value.startswith("+"):
        return (datetime.now(UTC) + timedelta(seconds=_seconds(value[1:], flag) or 0)).isoformat()
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{flag}: {text!r} is not a time (now, +2h, +7d, 2026-12-10, 2026-12-10T08:00)")
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


@app.command()
def approvals(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Jobs waiting for an approver's decision, oldest first."""
    data = Api(server, token).call("GET", "/v1/approvals")
    emit(data, as_json, lambda d: table([[j["id"], j["project"], j["name"], j["reason"]] for j in d["data"]],
                                        ["id", "project", "name", "why it asks"]))


@app.command()
def approve(
    job_id: str,
    reason: ReasonOpt = "",
    expires_in: Annotated[str | None, typer.Option(help="the approval lapses if the job has not started by then "
                                                        "(2h, 1d; default: the policy's)")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Let a pending job into the queue (admins and the project's approvers)."""
    api = Api(server, token)
    body: dict[str, object] = {"reason": reason}
    if expires_in is not None:
        body["expires_in_s"] = _seconds(expires_in, "--expires-in")
    emit(api.call("POST", f"/v1/jobs/{resolve_job(api, job_id)}/approve", json=body), as_json, _job_line)


@app.command()
def deny(
    job_id: str,
    reason: Annotated[str, typer.Option(help="why: the job's final reason (required)")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refuse a pending job: it ends denied, with the reason."""
    api = Api(server, token)
    emit(api.call("POST", f"/v1/jobs/{resolve_job(api, job_id)}/deny", json={"reason": reason}), as_json, _job_line)


def _policy_line(p: dict) -> str:
    parts = [f"above {p['max_gpu_hours']:g} GPU-h" if p["max_gpu_hours"] is not None else "",
             "whole nodes" if p["whole_node"] else "",
             f"workloads {', '.join(p['workloads'])}" if p["workloads"] else ""]
    asks = "; ".join(x for x in parts if x) or "nothing (every job queues at once)"
    extra = (", self-approval allowed" if p["self_approval"] else "") + (
        f", approvals last {p['approval_ttl_s']} s" if p["approval_ttl_s"] else "")
    return f"{p['project']}: approval for {asks}{extra}"


@policy_app.command("show")
def policy_show(project: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """A project's approval policy."""
    emit(Api(server, token).call("GET", f"/v1/projects/{project}/approval-policy"), as_json, _policy_line)


@policy_app.command("set")
def policy_set(
    project: str,
    max_gpu_hours: Annotated[float | None, typer.Option(help="jobs asking more GPU-equivalents x time limit "
                                                             "hours ask first")] = None,
    whole_node: Annotated[bool, typer.Option("--whole-node", help="a replica asking for a whole node asks")] = False,
    workload: Annotated[list[str] | None, typer.Option(help="a workload class whose jobs always ask "
                                                            "(repeat)")] = None,
    self_approval: Annotated[bool, typer.Option("--self-approval",
                                                help="an approver may decide their own jobs")] = False,
    ttl: Annotated[str | None, typer.Option(help="an approval lapses if the job has not started by then")] = None,
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a project's approval policy (admins; what is not given is off)."""
    body = {"max_gpu_hours": max_gpu_hours, "whole_node": whole_node, "workloads": workload or [],
            "self_approval": self_approval, "approval_ttl_s": _seconds(ttl, "--ttl"), "reason": reason}
    emit(Api(server, token).call("PUT", f"/v1/projects/{project}/approval-policy", json=body), as_json,
         _policy_line)


def _budget_line(b: dict) -> str:
    if b["amount"] is None:
        return f"{b['project']}: no budget"
    return f"{b['project']}: {b['amount']:g} {b['unit']} a month ({b['mode']}); {b['summary']}"


@budget_app.command("show")
def budget_show(project: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """A project's monthly budget and this month's use."""
    emit(Api(server, token).call("GET", f"/v1/projects/{project}/budget"), as_json, _budget_line)


@budget_app.command("set")
def budget_set(
    project: str,
    amount: Annotated[float, typer.Option(help="per calendar month (UTC)")],
    unit: Annotated[str, typer.Option(help="gpu_hours (whole-GPU equivalents) or cost")] = "gpu_hours",
    mode: Annotated[str, typer.Option(help="hard (hold jobs once spent) or approval (ask an approver)")] = "hard",
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a project's monthly budget (admins)."""
    body = {"amount": amount, "unit": unit, "mode": mode, "reason": reason}
    emit(Api(server, token).call("PUT", f"/v1/projects/{project}/budget", json=body), as_json, _budget_line)


@budget_app.command("clear")
def budget_clear(project: str, reason: ReasonOpt = "", server: ServerOpt = None, token: TokenOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Remove a project's budget (admins)."""
    emit(Api(server, token).call("DELETE", f"/v1/projects/{project}/budget", json={"reason": reason}), as_json,
         _budget_line)


def _capacity_line(c: dict) -> str:
    decided = f" by {c['decided_by']}" + (f": {c['decision_reason']}" if c["decision_reason"] else "") \
        if c["decided_by"] else ""
    return (f"{c['id']}: {c['project']} +{c['gpus']:g} GPUs {c['starts_at'][:16]} .. {c['ends_at'][:16]}, "
            f"{c['status']}{decided}")


@request_app.command("capacity")
def request_capacity(
    project: Annotated[str, typer.Option(help="the project that needs it")],
    gpus: Annotated[float, typer.Option(help="whole-GPU equivalents on top of its guarantee")],
    until: Annotated[str, typer.Option("--until", help="end: +7d, 2026-12-17, 2026-12-17T08:00")],
    start: Annotated[str, typer.Option("--from", help="start: now (default), +1d, 2026-12-10")] = "now",
    reason: ReasonOpt = "",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask for more guarantee for a period; an admin grants or refuses it."""
    body = {"project": project, "gpus": gpus, "from": when(start, "--from"), "until": when(until, "--until"),
            "reason": reason}
    emit(Api(server, token).call("POST", "/v1/capacity-requests", json=body), as_json, _capacity_line)


@capacity_app.command("list")
def capacity_list(project: Annotated[str | None, typer.Option(help="only this project's")] = None,
                  server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Capacity requests, newest first."""
    data = Api(server, token).call("GET", "/v1/capacity-requests", params={"project": project} if project else {})
    emit(data, as_json, lambda rows: "\n".join(_capacity_line(c) for c in rows) or "no capacity requests")


@capacity_app.command("grant")
def capacity_grant(request_id: str, reason: ReasonOpt = "", server: ServerOpt = None, token: TokenOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Grant a pending request (admins): a guarantee that ends by itself."""
    emit(Api(server, token).call("POST", f"/v1/capacity-requests/{request_id}/grant", json={"reason": reason}),
         as_json, _capacity_line)


@capacity_app.command("refuse")
def capacity_refuse(request_id: str, reason: Annotated[str, typer.Option(help="why (required)")],
                    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Refuse a pending request (admins), saying why."""
    emit(Api(server, token).call("POST", f"/v1/capacity-requests/{request_id}/refuse", json={"reason": reason}),
         as_json, _capacity_line)

"""``gpuq webhook add|list|rm|deliveries``: a project's job events POSTed, signed, to a URL."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from queue_service.cli.base import (
    Api,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    app,
    emit,
    error_text,
    fail,
    resolve_job,
    table,
)

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
        body["job_id"] = resolve_job(api, job)
    made = api.call("POST", f"/v1/projects/{project}/webhooks", json=body)
    emit(made, as_json, lambda h: f"webhook {h['id']} -> {h['url']} "
           f"({', '.join(h['events']) or 'every event'}{', job ' + h['job_id'] if h['job_id'] else ''})\n"
           f"secret (shown once; verify the Gpuq-Signature header with it): {h['secret']}")


@webhook_app.command("list")
def webhook_list(project: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """PROJECT's webhooks (never their secrets)."""
    data = Api(server, token).call("GET", f"/v1/projects/{project}/webhooks")
    emit(data, as_json, lambda hs: table(
        [[h["id"], h["url"], ",".join(h["events"]) or "all", h["job_id"] or "", "yes" if h["active"] else "no",
          h["created_by"], str(h["created_at"])[:19]] for h in hs],
        ["id", "url", "events", "job", "active", "by", "created"]))


@webhook_app.command("rm")
def webhook_rm(project: str, hook_id: str, server: ServerOpt = None, token: TokenOpt = None,
               as_json: JsonOpt = False) -> None:
    """Delete a webhook: nothing more is sent to it."""
    api = Api(server, token)
    response = api.request("DELETE", f"/v1/projects/{project}/webhooks/{hook_id}")
    if response.status_code >= 400:
        fail(error_text(response))
    emit({"id": hook_id, "deleted": True}, as_json, lambda r: f"webhook {r['id']} deleted")


@webhook_app.command("deliveries")
def webhook_deliveries(
    project: str, hook_id: str,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """What was sent to a webhook: each event's status, tries and last answer."""
    data = Api(server, token).call("GET", f"/v1/projects/{project}/webhooks/{hook_id}/deliveries",
                                   params={"limit": limit})
    emit(data, as_json, lambda d: table(
        [[str(r["event_id"]), r["status"], str(r["attempts"]), "" if r["last_status_code"] is None
          else str(r["last_status_code"]), str(r["delivered_at"] or r["next_attempt_at"])[:19],
          r["last_error"][:60]] for r in d["data"]],
        ["event", "status", "tries", "http", "at", "last error"]))

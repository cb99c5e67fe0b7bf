"""``gpuq admin token|project`` and ``gpuq audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from queue_service.cli.base import (
    Api,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    app,
    emit,
    table,
)

admin_app = typer.Typer(help="Admin commands: tokens and projects.", no_args_is_help=True)


token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


project_app = typer.Typer(help="Projects.", no_args_is_help=True)


admin_app.add_typer(token_app, name="token")


admin_app.add_typer(project_app, name="project")


app.add_typer(admin_app, name="admin")


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
    emit(made, as_json, lambda t: t["token"])


@token_app.command("list")
def token_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every token: id, role, binding, expiry, last use, revocation (never the secret)."""
    data = Api(server, token).call("GET", "/v1/tokens")
    emit(data, as_json, lambda ts: table(
        [[t["id"], t["name"], t["role"], ",".join(t["projects"]) or (t["node_name"] or ""),
          str(t["expires_at"] or "never")[:19], str(t["last_used_at"] or "")[:16],
          "revoked" if t["revoked_at"] else ""] for t in ts],
        ["id", "name", "role", "bound to", "expires", "last used", ""]))


@token_app.command("revoke")
def token_revoke(token_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a token: refused from its next request (audited)."""
    revoked = Api(server, token).call("DELETE", f"/v1/tokens/{token_id}")
    emit(revoked, as_json, lambda t: f"revoked {t['id']} ({t['role']} {t['name']})")


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
    from queue_service.settings import Settings

    path = (data_dir or Settings().data_dir) / ADMIN_TOKEN_FILE
    write_secret(path, made["token"])
    Api(server, made["token"]).call("DELETE", f"/v1/tokens/{me['id']}")
    emit({"id": made["id"], "revoked": me["id"], "token_file": str(path)}, as_json,
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
    emit(made, as_json, lambda p: f"project {p['name']} created")


@project_app.command("list")
def project_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Projects you can see."""
    data = Api(server, token).call("GET", "/v1/projects")
    emit(data, as_json, lambda ps: "\n".join(p["name"] for p in ps))


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
    emit(data, as_json, lambda page: table(
        [[a["at"][:19], a["actor"], a["action"], a["target"], a["reason"][:50]] for a in page["data"]],
        ["at", "actor", "action", "target", "reason"]))

"""The CLI's shared parts: the Typer app, the REST client with readable errors, common options, output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from queue_service import cli_config
from queue_service.cli import transport

# bootstrap.ADMIN_TOKEN_FILE, not imported from there: bootstrap pulls in SQLAlchemy and the models, which a
# command that only talks HTTP never needs (tests/cli/test_cli_imports.py keeps the two equal).
ADMIN_TOKEN_FILE = cli_config.ADMIN_TOKEN_FILE

app = typer.Typer(help="gpuq: a GPU batch job queue for bare-metal and Docker GPU hosts.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """A callback keeps ``gpuq`` a group of commands when ``gpuq NAME`` loaded a module of one command."""


JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


ServerOpt = Annotated[str | None, typer.Option("--server", help="API URL (default: GPUQ_SERVER_URL or local)")]


TokenOpt = Annotated[str | None, typer.Option("--token",
                                              help="API token (default: GPUQ_TOKEN or the local admin token)")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"gpuq: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


class Api:
    """A thin REST client with readable errors (``http``: what has httpx's ``request``; tests give a TestClient)."""

    http: Any

    def __init__(self, server: str | None, token: str | None) -> None:
        try:
            target = cli_config.resolve(server, token)  # queue_service/cli_config.py says the order
            self.base, self.token = target.server_url, target.token
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self.http = transport.Client(self.base, headers=headers, timeout=30)
        except ValueError as exc:  # a bad GPUQ_PORT, a --server that is not a URL
            fail(str(exc))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The server's answer, whatever its status; no answer at all is a CLI message, not a traceback."""
        try:
            return self.http.request(method, path, **kwargs)
        except transport.TransportError as exc:
            hint = "; is `gpuq serve` running?" if exc.refused else ""
            fail(f"cannot reach the gpuq server at {self.base} ({exc}){hint}")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a successful answer; a 4xx/5xx ends the command with the server's reason."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            fail(error_text(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            fail(f"the server at {self.base} answered {response.status_code} with no JSON (is it a gpuq server?)")


def error_text(response: Any) -> str:
    """``404: no such job``: the status and the server's ``detail`` (its text if the body is not JSON)."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text[:300]
    hint = " (set --token or GPUQ_TOKEN)" if response.status_code == 401 else ""
    return f"{response.status_code}: {detail}{hint}"


def table(rows: list[list[str]], headers: list[str]) -> str:
    if rows:
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    else:
        widths = [len(h) for h in headers]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def resources_text(r: dict) -> str:
    if r.get("mig"):
        return f"mig {r['mig']}" + (f" x{r['mig_count']}" if r.get("mig_count", 1) > 1 else "")
    if r.get("blocks"):
        return f"{r['blocks']} blocks, {r['gpu_memory_mib']} MiB"
    gpus = r.get("gpus") or 0
    text = f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "cpu only"
    return text + (f" x{r['replicas']}" if r.get("replicas", 1) > 1 else "")


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        typer.echo(human(data))


FINAL = ("succeeded", "failed", "cancelled", "timed_out")


ID_LENGTH = 20  # queue_service.db.base.new_id: 80 bits as hex; anything shorter is a prefix


def resolve_job(api: Api, job_id: str) -> str:
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


def array_tasks(api: Api, job: dict, *, live_only: bool = False) -> list[dict]:
    """Every task of the array ``job`` leads (its ``array_id``), by index; ``live_only``: those not final.

    The list has no array filter: live tasks come from the live states' pages, the rest from every page.
    """
    base = {"project": job["project"]}
    found = [j for s in LIVE for j in all_pages(api, {**base, "state": s})]
    if not live_only:
        found += [j for j in all_pages(api, base) if j["state"] not in LIVE]
    return sorted((j for j in found if j.get("array_id") == job["array_id"]), key=lambda j: j["array_index"])


LIVE = ("running", "admitted", "queued", "pending_approval")


def all_pages(api: Api, params: dict[str, Any], cap: int = 10_000) -> list[dict]:
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


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


ReasonOpt = Annotated[str, typer.Option(help="why (kept in the audit log)")]


def limit_text(seconds: int | None) -> str:
    return "-" if seconds is None else duration_text(seconds)

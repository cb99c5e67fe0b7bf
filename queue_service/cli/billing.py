"""``gpuq usage`` and ``gpuq prices``: the bill and the price catalogue."""

from __future__ import annotations

import json
from typing import Annotated

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
    table,
)

prices_app = typer.Typer(help="The GPU price catalogue (effective-dated; admins add lists).", no_args_is_help=True)


app.add_typer(prices_app, name="prices")


@app.command()
def usage(
    project: Annotated[str | None, typer.Option(help="one project (default: every project you can see)")] = None,
    month: Annotated[str | None, typer.Option(help="e.g. 2026-11 (default: this month so far)")] = None,
    start: Annotated[str | None, typer.Option(help="ISO start, instead of --month")] = None,
    end: Annotated[str | None, typer.Option(help="ISO end, instead of --month")] = None,
    group_by: Annotated[str, typer.Option(
        "--group-by", help="day, job, user, gpu_model, project, workload or label:<key> (e.g. label:feature)")] = "day",
    csv: Annotated[bool, typer.Option("--csv", help="CSV for finance")] = False,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """GPU-hours, block-hours, MIG-hours, cost and measured busy share."""
    api = Api(server, token)
    path = f"/v1/projects/{project}/usage" if project else "/v1/usage"
    params = {k: v for k, v in (("month", month), ("start", start), ("end", end), ("group_by", group_by)) if v}
    if csv:
        response = api.request("GET", path, params=params | {"format": "csv"})
        if response.status_code >= 400:
            fail(error_text(response))
        typer.echo(response.text, nl=False)
        return
    data = api.call("GET", path, params=params)

    def human(d: dict) -> str:
        def line(r: dict) -> list[str]:
            busy = "-" if r["busy_share"] is None else f"{r['busy_share']:.0%}"
            return [r["key"], r["project"], f"{r['gpu_hours']:.2f}", f"{r['block_hours']:.2f}",
                    f"{r['mig_hours']:.2f}", f"{r['gpu_equivalent_hours']:.2f}", f"{r['cost']:.2f}", busy]
        head = f"usage {d['start']} .. {d['end']} by {d['group_by']} ({', '.join(d['projects']) or 'no projects'})"
        if d["group_by"] == "job":  # a job's class and labels beside its bill
            rows = [[*line(r), r.get("workload", ""), ",".join(f"{k}={v}" for k, v in sorted(
                (r.get("labels") or {}).items()))] for r in d["rows"]] + [[*line(d["total"]), "", ""]]
            return head + "\n" + table(rows, ["job", "project", "GPU h", "block h", "MIG h", "GPU-eq h", "cost",
                                               "busy", "workload", "labels"])
        rows = [line(r) for r in d["rows"]] + [line(d["total"])]
        return head + "\n" + table(rows, [d["group_by"], "project", "GPU h", "block h", "MIG h", "GPU-eq h",
                                             "cost", "busy"])

    emit(data, as_json, human)


@prices_app.command("list")
def prices_list(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every price list, with its history."""
    data = Api(server, token).call("GET", "/v1/prices")
    emit(data, as_json, lambda ps: table(
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
    emit(made, as_json,
           lambda p: f"prices for {p['gpu_model']} from {p['effective_from']}: {p['gpu_hour']:g}/GPU-hour")

"""Reading jobs: ``gpuq jobs`` (queue order, arrays folded), ``history``, ``show``, ``logs``; and ``cancel``."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from queue_service.cli.base import (
    FINAL,
    LIVE,
    Api,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    all_pages,
    app,
    array_tasks,
    duration_text,
    emit,
    fail,
    resolve_job,
    resources_text,
    table,
)
from queue_service.cli.share import efficiency_lines


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


STATE_ORDER = ("running", "admitted", "queued", "pending_approval", "succeeded", "failed", "cancelled",
               "timed_out", "denied")


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
        found = all_pages(api, {**base, "state": state})
    else:
        found = [j for s in LIVE for j in all_pages(api, {**base, "state": s})]
        if show_all:
            found += [j for j in all_pages(api, base) if j["state"] not in LIVE]
    ordered = queue_order(found)
    fold = not tasks and not state
    finished_tasks: list[dict] = []
    if fold and not show_all and any(j.get("array_id") for j in ordered):  # the counts include finished tasks
        finished_tasks = [j for j in all_pages(api, base) if j["state"] not in LIVE and j.get("array_id")]
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
            state_text += " (idle)" if j.get("idle") else ""
            exit_text, reason = "" if j["exit_code"] is None else str(j["exit_code"]), j["reason"]
        reason = reason if wide or len(reason) <= 60 else reason[:59] + "…"
        return [position, label, j["name"], j["project"], j.get("workload", ""), j["priority_class"],
                str(_effective_priority(j)), state_text, resources_text(j["resources"]), exit_text, reason]

    def human(d: dict) -> str:
        text = table([line(row) for row in shown_rows],
                      ["pos", "id", "name", "project", "workload", "class", "prio", "state", "resources", "exit",
                       "reason"])
        if d["count"] < d["total"]:
            text += f"\nshowing {d['count']} of {d['total']} (--limit N for more)"
        return text

    emit(data, as_json, human)


def _elapsed(j: dict) -> float | None:
    from datetime import datetime

    if not j.get("started_at") or not j.get("finished_at"):
        return None
    started, finished = (datetime.fromisoformat(str(j[k]).replace("Z", "+00:00"))
                         for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


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
    finished = sorted((j for s in FINAL for j in all_pages(api, {**base, "state": s})),
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
        return table([[j["id"], j["name"], j["project"], j["state"], "" if j["exit_code"] is None else j["exit_code"],
                        duration_text(j["elapsed_s"]), f"{j['gpu_equivalent_hours']:.2f}", f"{j['cost']:.2f}",
                        str(j["finished_at"] or "")[:19]] for j in js],
                      ["id", "name", "project", "state", "exit", "elapsed", "GPU h", "cost", "finished"])

    emit(rows, as_json, human)


@app.command()
def show(job_id: str, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """One job in full, with its timeline (every transition, oldest first)."""
    api = Api(server, token)
    job_id = resolve_job(api, job_id)
    job = api.call("GET", f"/v1/jobs/{job_id}")
    job["events"] = api.call("GET", f"/v1/jobs/{job_id}/events")["data"]
    job["efficiency"] = api.call("GET", f"/v1/jobs/{job_id}/efficiency")

    def human(j: dict) -> str:
        lines = [f"{k}: {j[k]}" for k in ("id", "name", "project", "state", "reason", "exit_code", "image",
                                          "priority_class", "time_limit_s", "attempt", "submitted_at",
                                          "admitted_at", "started_at", "finished_at")]
        lines.insert(4, f"resources: {resources_text(j['resources'])}")
        lines.append(f"command: {json.dumps(j['command'])}")
        for a in j["allocation"]:
            what = a["kind"] if a["kind"] != "blocks" else f"{a['blocks']} blocks, {a['gpu_memory_mib']} MiB"
            lines.append(f"allocation: node {a['node']} gpu {a['gpu_uuid'] or '-'} ({what})")
        lines += efficiency_lines(j["efficiency"])
        lines.append("timeline:")
        for e in j["events"]:
            moved = f"{e['from_state'] or 'new'} -> {e['to_state']}"
            why = f" [{e['cause']}]" if e["cause"] else ""
            words = f": {e['reason']}" if e["reason"] else ""
            lines.append(f"  {e['at']}  #{e['attempt']}  {e['event']:<8} {moved:<22} by {e['actor']}{why}{words}")
        return "\n".join(lines)

    emit(job, as_json, human)


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
    job_id = resolve_job(api, job_id)
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
        job = api.call("GET", f"/v1/jobs/{resolve_job(api, array_part if sep else given)}")
        if sep:
            if job.get("array_id") is None or not index.isdigit():
                fail(f"{given!r}: ID_N names task N of an array, and {job['id']} is not an array")
            task = next((t for t in array_tasks(api, job) if t["array_index"] == int(index)), None)
            if task is None:
                fail(f"array {job['array_id']} has no task {index}")
            targets = [task["id"]]
        elif job.get("array_id") == job["id"]:
            targets = [t["id"] for t in array_tasks(api, job, live_only=True)] or [job["id"]]
        else:
            targets = [job["id"]]
        done += [api.call("POST", f"/v1/jobs/{target}/cancel") for target in targets]
    emit(done, as_json, lambda js: "\n".join(
        f"{j['id']}: {j['state']}" + (f" ({j['reason']})" if j["reason"] else "") for j in js))

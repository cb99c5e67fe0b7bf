"""``gpuq nodes`` (GPUs as they are: MIG slots, shares by holder) and ``gpuq node drain|cordon|uncordon|accept``."""

from __future__ import annotations

import typer

from queue_service.cli.base import (
    Api,
    JsonOpt,
    ReasonOpt,
    ServerOpt,
    TokenOpt,
    app,
    emit,
    table,
)


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
        slots = [_shared_slot(i, holders) if i.get("mode") == "shared" else
                 f"{i['profile']}@{i['start']} " + (f"held by {_holder_text(by_start[i['start']])}"
                                                   if i["start"] in by_start else "held" if i["held"] else "free")
                 for i in g.get("mig_instances") or []]
        free = sum(1 for i in g.get("mig_instances") or [] if not i["held"] and not i.get("used_blocks"))
        return [(f"{free}/{len(slots)} instances free, {g['free_memory_mib']} MiB", "; ".join(slots) or "no instances")]
    if g["mode"] == "shared":
        who = "; ".join(f"{_holder_text(h)} {h['blocks']} blocks, {h['gpu_memory_mib']} MiB" for h in holders)
        return [(f"{g['free_blocks']}/100 blocks, {g['free_memory_mib']} MiB", who)]
    if g["held_whole"] or holders:
        return [("held", "by " + ", ".join(_holder_text(h) for h in holders) if holders else "")]
    return [(f"free, {g['free_memory_mib']} MiB", "")]


def _shared_slot(i: dict, holders: list[dict]) -> str:
    """``1g.10gb@0 shared 40/100 blocks of 16 SMs: alpha/infer (…) 20 blocks, …`` (blocks are the instance's)."""
    who = ", ".join(f"{_holder_text(h)} {h['blocks']} blocks" for h in holders
                    if h.get("kind") == "blocks" and h.get("mig_start") == i["start"])
    return (f"{i['profile']}@{i['start']} shared {i.get('used_blocks', 0)}/100 blocks of {i.get('sm_count', 0)} SMs"
            + (f": {who}" if who else ""))


def _mps_note(g: dict) -> str:
    """``mps: ready`` / ``mps: failed: <reason>`` for the GPU and each MIG instance with a status ("" if none)."""
    parts = [f"mps: {g['mps']}"] if g.get("mps") else []
    parts += [f"{i['profile']}@{i['start']} mps: {i['mps']}" for i in g.get("mig_instances") or [] if i.get("mps")]
    return "; ".join(parts)


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
                if _mps_note(g):
                    rows.append(["", "", "", "", "", "", _mps_note(g)])
        return table(rows, ["node", "status", "cpus", "memory", "gpu", "free", "held by / note"])

    emit(data, as_json, human)


node_app = typer.Typer(help="Node controls: drain, cordon, uncordon, accept.", no_args_is_help=True)


app.add_typer(node_app, name="node")


def _node_action(action: str, doc: str) -> None:
    def command(name: str, reason: ReasonOpt = "", server: ServerOpt = None, token: TokenOpt = None,
                as_json: JsonOpt = False) -> None:
        answer = Api(server, token).call("POST", f"/v1/nodes/{name}/{action}", json={"reason": reason})
        emit(answer, as_json, lambda a: f"node {a['name']}: {a['status']}" + (", cordoned" if a["cordoned"] else ""))

    command.__doc__ = doc
    node_app.command(name=action)(command)


_node_action("drain", "No new work on the node; running jobs finish.")


_node_action("cordon", "No new work on the node.")


_node_action("uncordon", "Undo drain and cordon.")


_node_action("accept", "Accept a node's held GPU change (more GPUs, other models): admins only, audited.")

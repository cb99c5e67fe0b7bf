"""``gpuq share`` (fair-share standing, like Slurm's sshare) and ``gpuq efficiency`` (allocated vs used GPU time);
``efficiency_lines``: the efficiency block ``gpuq show`` prints."""

from __future__ import annotations

from typing import Annotated

import typer

from queue_service.cli.base import Api, JsonOpt, ServerOpt, TokenOpt, app, emit, table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def efficiency_lines(e: dict) -> list[str]:
    """The job's measured use against what it asked, and the right-size hint (``GET /v1/jobs/{id}/efficiency``)."""
    if not e.get("measured"):
        return ["efficiency: not measured (no NVML samples yet)"]
    memory = f"peak {e['peak_memory_mib']} MiB"
    if e.get("mean_memory_mib") is not None:
        memory += f", mean {e['mean_memory_mib']:.0f} MiB"
    if e.get("allocated_memory_mib"):
        memory += f" of {e['allocated_memory_mib']} MiB ({_pct(e.get('memory_share'))})"
    lines = [(f"efficiency: busy {_pct(e['busy_share'])} of what it held (90 % of its run at or below "
             f"{_pct(e['p90_busy_share'])}), over {e['sampled_s']:.0f} s sampled; GPU memory {memory}")]
    if e.get("idle"):
        lines.append(f"idle: since {e['idle_since']}")
    if e.get("hint"):
        lines.append(f"right-size: {e['hint']}")
    return lines


@app.command()
def share(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Fair-share standing per project (like sshare): weight, norm share, allocated and used usage, factor, rank.

    Usage is decayed GPU-equivalent hours (the admitter's half-life); ``charged`` is what the mode
    (GPUQ_FAIR_SHARE_CHARGE: allocated or used) counts; lower standing runs first among equal priorities.
    """
    data = Api(server, token).call("GET", "/v1/share")

    def human(d: dict) -> str:
        rows = [[r["project"], f"{r['weight']:g}", f"{r['norm_share']:.3f}", f"{r['allocated_gpu_h']:.2f}",
                 f"{r['used_gpu_h']:.2f}", f"{r['charged_gpu_h']:.2f}", f"{r['effective_usage']:.3f}",
                 f"{r['fair_share']:.3f}", str(r["rank"])] for r in sorted(d["rows"], key=lambda r: r["rank"])]
        head = f"fair share charged by {d['charge']} (half-life {d['half_life_s'] / 86400:g} d)\n"
        return head + table(rows, ["project", "shares", "norm", "alloc GPU h", "used GPU h", "charged",
                                   "eff usage", "fairshare", "rank"])

    emit(data, as_json, human)


@app.command()
def efficiency(
    group_by: Annotated[str, typer.Option(help="project, workload or user")] = "project",
    month: Annotated[str | None, typer.Option(help="e.g. 2026-11 (default: this month so far)")] = None,
    server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Allocated vs used GPU time per group and in total: GPU busy time as a share of allocated time."""
    params = {"group_by": group_by, **({"month": month} if month else {})}
    data = Api(server, token).call("GET", "/v1/usage/efficiency", params=params)

    def human(d: dict) -> str:
        def line(r: dict) -> list[str]:
            return [r["key"], str(r["jobs"]), f"{r['allocated_gpu_s'] / 3600:.2f}",
                    f"{r['measured_gpu_s'] / 3600:.2f}", f"{r['used_gpu_s'] / 3600:.2f}", _pct(r["busy_share"]),
                    _pct(r["coverage"])]
        head = f"GPU busy time as a share of allocated time, {d['start']} .. {d['end']} by {d['group_by']}\n"
        return head + table([line(r) for r in d["rows"]] + [line(d["total"])],
                            [d["group_by"], "jobs", "alloc GPU h", "measured", "used GPU h", "busy", "coverage"])

    emit(data, as_json, human)

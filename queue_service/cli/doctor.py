"""``gpuq doctor``: the GPU acceptance check of this host (:mod:`workers.doctor`), one line per check.

Run it once on a new GPU host (as the user the agent runs as). It talks to no
server. Exit status 1 if a check failed; a check this host cannot run (no GPU,
no MPS binary, no CUDA library, no NVIDIA container toolkit) says
``not available here: <why>`` and does not fail the run.
"""

from __future__ import annotations

from typing import Annotated

import typer

from queue_service.cli.base import JsonOpt, app


@app.command()
def doctor(
    as_json: JsonOpt = False,
    mps_binary: Annotated[str, typer.Option("--mps-binary", help="the MPS control binary")] = "nvidia-cuda-mps-control",
) -> None:
    """Check this GPU host: NVML vs nvidia-smi, an MPS daemon, MPS compute and memory limits, Docker GPU isolation."""
    import json

    from workers.doctor import FAIL, Host, run_checks

    results = run_checks(Host(mps_binary=mps_binary), emit=None if as_json else typer.echo)
    if as_json:
        typer.echo(json.dumps([{"check": r.name, "status": r.status, "detail": r.detail} for r in results], indent=2))
    failed = [r.name for r in results if r.status == FAIL]
    if not as_json:
        typer.echo(f"{len(results)} checks: {len(results) - len(failed)} without failure"
                   + (f", FAILED: {', '.join(failed)}" if failed else ""))
    raise typer.Exit(1 if failed else 0)

"""``gpuq serve``, ``gpuq agent``, ``gpuq migrate`` and ``gpuq simulate``: the commands that run gpuq itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from queue_service.cli.base import (
    app,
    fail,
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="SQLite database, tokens, logs")] = None,
    simulate_gpus: Annotated[str | None, typer.Option(help="declare GPUs, e.g. h100-80gb:2,a100-40gb:1")] = None,
    database_url: Annotated[str | None, typer.Option(help="e.g. postgresql://user@host/db")] = None,
    broker_url: Annotated[str | None, typer.Option(help="memory:// or redis://host:6379/0")] = None,
    local_agent: Annotated[bool | None, typer.Option("--local-agent/--no-local-agent",
                                                        help="run an agent for this host in-process")] = None,
    node_name: Annotated[str | None, typer.Option(help="name of the local node")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve HTTPS: PEM certificate (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="the certificate's PEM private key")] = None,
    api_processes: Annotated[int | None, typer.Option(
        help="processes serving the API on the one port (PostgreSQL + Redis; default 1)")] = None,
) -> None:
    """Run the API, the admitter and (by default) an agent for this host, in one process."""
    given: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir, "simulate_gpus": simulate_gpus,
                             "database_url": database_url, "broker_url": broker_url, "local_agent": local_agent,
                             "node_name": node_name, "tls_cert": tls_cert, "tls_key": tls_key,
                             "api_processes": api_processes}
    from queue_service.settings import Settings  # imported by the commands that use it: gpuq --help stays light

    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # noqa: BLE001 - a settings error is the user's input
        fail(f"bad settings: {exc}")
    from queue_service.embedded import run_server

    try:
        run_server(settings)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def agent(
    server: Annotated[str, typer.Option(help="the gpuq API URL")],
    token: Annotated[str, typer.Option(help="a token with role agent", envvar="GPUQ_TOKEN")],
    broker_url: Annotated[str, typer.Option(help="redis://host:6379/0")],
    runtime: Annotated[str, typer.Option(help="auto (process + Docker if reachable), docker or process")] = "auto",
    node_name: Annotated[str | None, typer.Option(help="default: the hostname")] = None,
    simulate_gpus: Annotated[str | None, typer.Option(help="declare GPUs instead of NVML")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="logs and work directories")] = None,
) -> None:
    """Run a node agent: register this host and run what the service sends it."""
    from queue_service.embedded import run_agent
    from queue_service.settings import Settings

    try:
        settings = Settings()  # GPUQ_* from the environment: the data dir, GPUQ_SAMPLE_INTERVAL_S
        run_agent(server=server, token=token, broker_url=broker_url, runtime=runtime, node_name=node_name,
                  simulate_gpus=simulate_gpus, data_dir=data_dir or settings.data_dir / "agent",
                  sample_interval_s=settings.sample_interval_s)
    except ValueError as exc:
        fail(str(exc))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []}, add_help_option=False)
def simulate(ctx: typer.Context) -> None:
    """Replay a production trace (openb format) through the placement policies (--mode queue: through
    the whole scheduler in simulated time); see --help."""
    args = list(ctx.args)
    if args[:2] == ["--mode", "queue"] or "--mode=queue" in args[:1]:
        from queue_service.admission.replay_cli import cli as queue_cli

        raise typer.Exit(queue_cli(args[1:] if args[0] == "--mode=queue" else args[2:]))
    if args[:2] == ["--mode", "place"]:
        args = args[2:]
    from partitioner.simulate import cli as simulate_cli

    raise typer.Exit(simulate_cli(args))


@app.command()
def migrate(
    database_url: Annotated[str | None, typer.Option(help="default: GPUQ_DATABASE_URL or the local SQLite")] = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Apply database migrations."""
    from queue_service.db.migrate import upgrade
    from queue_service.settings import Settings

    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    settings = Settings(**overrides)
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")

"""The ``gpuq`` command: serve, agent, submit, run, jobs, show, logs, cancel, nodes, admin, usage, simulate.

One module per group of commands, each registering on the one Typer ``app`` of ``base``; a new group is
a new module named in ``COMMANDS`` and its command names in ``ROUTES``. ``gpuq NAME`` imports only the
module of NAME (``gpuq``, ``--help`` or an unknown name import them all); ``queue_service.cli.app`` (what
tests and ``gpuq --help`` use) is the app with every command. Heavier code (the embedded server, the
partitioner, SQLAlchemy) is imported inside the commands that need it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# The command modules, in the order ``gpuq --help`` lists their commands.
COMMANDS = ("server", "submit", "jobs", "nodes", "operator", "billing", "admin", "webhooks", "share", "approvals",
            "workloads", "doctor")

# Each top-level command or group name -> the module that registers it (tests/cli/test_cli_imports.py checks
# it against what the modules register).
ROUTES = {
    **dict.fromkeys(("serve", "agent", "simulate", "migrate"), "server"),
    **dict.fromkeys(("submit", "run"), "submit"),
    **dict.fromkeys(("jobs", "history", "show", "logs", "cancel"), "jobs"),
    **dict.fromkeys(("nodes", "node"), "nodes"),
    **dict.fromkeys(("priority", "hold", "release", "top", "reclaim", "quota", "class"), "operator"),
    **dict.fromkeys(("usage", "prices"), "billing"),
    **dict.fromkeys(("audit", "admin"), "admin"),
    "webhook": "webhooks",
    **dict.fromkeys(("share", "efficiency"), "share"),
    **dict.fromkeys(("approvals", "approve", "deny", "policy", "budget", "request", "capacity"), "approvals"),
    **dict.fromkeys(("workload", "coexistence", "allowlist"), "workloads"),
    "doctor": "doctor",
}

# Names this package gives (``cli.app``, ``cli.Api``, ...): each one loads every command first.
_EXPORTS = {"app": "base", "Api": "base", "fail": "base", "_counts_text": "jobs", "_spec_text": "jobs",
            "queue_order": "jobs"}

__all__ = ["COMMANDS", "ROUTES", "Api", "_counts_text", "_spec_text", "app", "fail", "load", "main", "queue_order"]


def load(args: list[str] | None = None) -> None:
    """Register the commands ``args`` needs on the app: its first word's module, or all of them."""
    first = args[0] if args else None
    for name in (ROUTES[first],) if first in ROUTES else COMMANDS:
        importlib.import_module(f"queue_service.cli.{name}")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    load()
    value = getattr(importlib.import_module(f"queue_service.cli.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def main() -> None:
    """``gpuq``: the command line's module only, its options converted without pydantic (coercion.py)."""
    from queue_service.cli import base, coercion

    coercion.install()
    load(sys.argv[1:])
    base.app()

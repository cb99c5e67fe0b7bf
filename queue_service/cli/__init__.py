"""The ``gpuq`` command: serve, agent, submit, run, jobs, show, logs, cancel, nodes, admin, usage, simulate.

One module per group of commands, each registering on the one Typer ``app`` of ``base``; a new group is
a new module named in ``COMMANDS``. Only what talks to the server is imported at start: heavier code (the
embedded server, the partitioner, SQLAlchemy) is imported inside the commands that need it.
"""

from __future__ import annotations

import importlib

from queue_service.cli.base import Api, app, fail

# The command modules, in the order ``gpuq --help`` lists their commands.
COMMANDS = ("server", "submit", "jobs", "nodes", "operator", "billing", "admin", "webhooks", "share", "approvals",
            "workloads", "doctor")
for _module in COMMANDS:
    importlib.import_module(f"queue_service.cli.{_module}")

from queue_service.cli.jobs import _counts_text, _spec_text, queue_order  # noqa: E402 - after the commands register

__all__ = ["COMMANDS", "Api", "_counts_text", "_spec_text", "app", "fail", "main", "queue_order"]


def main() -> None:
    app()

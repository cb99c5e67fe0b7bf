"""The per-container watchdog: the Docker runtime's equivalent of the process shim's fence.

Why: a container outlives its agent (that is what lets a restarted agent
re-adopt it), so an agent killed for good would leave it running while the
service requeues the job elsewhere — the job would run twice. The Docker
runtime therefore starts, in its own session, one
``python -m workers.watchdog RUN_DIR`` per container; it

1. watches the container's local lease (the mtime of ``RUN_DIR/lease``,
   whose content is the fence delay in seconds, the same file and rule as
   :mod:`workers.shim`): the agent renews it after each answered heartbeat;
2. unrenewed for that long (half the node lease), it records
   ``RUN_DIR/fenced.json`` and stops the container (SIGTERM, a grace capped
   at half the fence delay, SIGKILL), retrying while the engine is away, so
   the container is gone before the service may requeue the job;
3. exits as soon as the container is no longer running (or is gone).

The agent starts it between creating the container and starting it, so
even an agent killed in the middle of a launch leaves no container that
runs unwatched; a container still ``created`` is watched like a running one.

It never removes the container: its exit state is the agent's to read and
report (the next agent re-adopts it and is told to drop it as stale). It
only ever touches the one container id in ``RUN_DIR/spec.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from workers.shim import fence_after_s, lease_expired, write_json

POLL_S = 0.2
INSPECT_EVERY_S = 1.0
STOP_RETRY_S = 1.0


RUNNING = ("running", "restarting", "paused")


def _status(client: Any, container_id: str) -> str | None:
    """The container's status (``created``, ``running``, ``exited``, ...; ``gone`` once removed), None if the
    engine does not answer."""
    import docker.errors
    import requests.exceptions

    try:
        state = client.api.inspect_container(container_id)["State"]
    except docker.errors.NotFound:
        return "gone"
    except (docker.errors.DockerException, requests.exceptions.RequestException):  # the engine is away
        return None
    return "running" if state.get("Running") else str(state.get("Status") or "")


def _stop(client: Any, container_id: str, grace_s: float) -> bool:
    """Stop the container (SIGTERM, ``grace_s``, SIGKILL); True once it is not running any more."""
    import docker.errors
    import requests.exceptions

    try:
        client.api.stop(container_id, timeout=max(0, math.ceil(grace_s)))
    except docker.errors.NotFound:
        return True
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    return _status(client, container_id) not in (*RUNNING, None)  # a never-started one ("created") is stopped


def main(run_dir: Path) -> int:
    import docker
    import docker.errors

    spec = json.loads((run_dir / "spec.json").read_text())
    container_id = spec["container"]
    (run_dir / "watchdog.pid").write_text(str(os.getpid()))
    lease = run_dir / "lease"
    client = None
    while client is None:  # an engine that is away at start is waited for, however long: it may come back
        try:
            client = docker.from_env(timeout=10)
        except docker.errors.DockerException:
            time.sleep(STOP_RETRY_S)
    last_inspect = 0.0
    while True:
        if lease_expired(lease):
            grace_s = min(float(spec.get("grace_s", 10.0)), fence_after_s(lease) / 2)
            with contextlib.suppress(OSError):  # the record is for the agent; the stop matters more
                write_json(run_dir / "fenced.json", {"at": time.time(), "container": container_id})
            while not _stop(client, container_id, grace_s):
                time.sleep(STOP_RETRY_S)  # the engine is away: it must not come back to a running container
            return 0
        now = time.monotonic()
        if now - last_inspect >= INSPECT_EVERY_S:
            last_inspect = now
            # "created": the agent starts the watchdog before the container, so that no moment exists in
            # which the container runs unwatched; it is watched from then on.
            if _status(client, container_id) not in (*RUNNING, "created", None):
                return 0  # it ended (or was removed): nothing left to fence
        time.sleep(POLL_S)

if __name__ == "__main__":  # pragma: no cover - run by DockerRuntime as its own process
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(Path(sys.argv[1])))

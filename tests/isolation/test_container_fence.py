"""The Docker runtime's fence, without a service: a container whose local lease is renewed keeps running; one
whose lease lapses is stopped by its own watchdog process (``workers.watchdog``) and reported lost (fence)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.services import require_docker
from workers.messages import LaunchSpec
from workers.runtime.base import ExitReason
from workers.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker


def test_a_container_whose_lease_lapses_is_stopped_by_its_watchdog(tmp_path: Path) -> None:
    image = require_docker()
    rt = DockerRuntime(state_dir=tmp_path / "watchdogs")
    rt.renew(1.0)  # the watchdog fences after 1 s without a renewal
    spec = LaunchSpec(job_id=f"fence-{uuid.uuid4().hex[:8]}", attempt=1, node_name=f"test-{uuid.uuid4().hex[:8]}",
                      command=["sleep", "60"], image=image, grace_s=0.5)
    handle = rt.launch(spec, stdout_path=tmp_path / "out", stderr_path=tmp_path / "err")
    try:
        for _ in range(15):  # renewed (the agent's heartbeats are answered): it runs on
            rt.renew()
            time.sleep(0.2)
        assert rt.wait(handle, 0) is None, "a renewed container must keep running"
        assert rt._watchdog_alive(handle)
        t0 = time.monotonic()
        status = rt.wait(handle, 20)  # no renewals any more: the agent is gone
        assert status is not None and status.reason is ExitReason.LOST and status.cause == "fence", status
        assert time.monotonic() - t0 < 15
        deadline = time.monotonic() + 5
        while rt._watchdog_alive(handle) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not rt._watchdog_alive(handle), "the watchdog exits with its container"
    finally:
        rt.cleanup(handle)
    assert not (tmp_path / "watchdogs" / handle).exists()


def test_the_watchdog_watches_a_container_from_before_its_start(tmp_path: Path) -> None:
    """launch() starts the watchdog between creating and starting the container: a watchdog that gave up on a
    container still ``created`` would leave it unwatched once it starts (an agent killed right then)."""
    import docker

    image = require_docker()
    client = docker.from_env(timeout=30)
    rt = DockerRuntime(client=client, state_dir=tmp_path / "watchdogs")
    rt.renew(1.0)
    container = client.containers.create(image, ["sleep", "60"], name=f"gpuq-fence-{uuid.uuid4().hex[:8]}",
                                         network_mode="none")
    try:
        rt.ensure_watchdog(container.id, grace_s=0.5)
        for _ in range(10):  # two of the watchdog's inspections see it "created"
            rt.renew()
            time.sleep(0.2)
        assert rt._watchdog_alive(container.id), "a created container is watched"
        container.start()  # the start the agent was about to make; the agent is gone: no renewals
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                break
            time.sleep(0.2)
        assert container.status == "exited", container.status
        assert (tmp_path / "watchdogs" / container.id / "fenced.json").exists()
    finally:
        container.remove(force=True)
        rt.cleanup(container.id)
        client.close()

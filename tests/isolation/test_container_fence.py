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

"""DockerRuntime against a real engine and the busybox test image (.ci/docker-setup.sh).

Locally these skip without an engine; in CI (CI=true) a missing engine fails.
GPU device requests cannot run without the NVIDIA runtime: their arguments
are checked in test_docker_config.py, and here only that asking for a GPU on
an engine without one is a clean LaunchError.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.services import require_docker
from workers.messages import LaunchSpec
from workers.runtime.base import ExitReason, LaunchError
from workers.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker


@pytest.fixture
def image() -> str:
    return require_docker()


@pytest.fixture
def node() -> str:
    """A node name unique to the test, so label filters see only its containers."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def runtime(image, node):
    rt = DockerRuntime()
    yield rt
    for adopted in DockerRuntime().adopt(node):
        rt.cleanup(adopted.handle)


def launch(rt: DockerRuntime, tmp_path: Path, image: str, node: str, command: list[str], **kw) -> str:
    # The job id names the container (gpuq-<job>-a1-r0): unique per test (its node), as tests run in parallel.
    job_id = kw.pop("job_id", f"job-{node}")
    spec = LaunchSpec(job_id=job_id, attempt=1, node_name=node, command=command, image=image, **kw)
    return rt.launch(spec, stdout_path=tmp_path / "out", stderr_path=tmp_path / "err")


def logs(rt: DockerRuntime, handle: str, tmp_path: Path) -> tuple[str, str]:
    rt.collect_logs(handle, stdout_path=tmp_path / "out", stderr_path=tmp_path / "err")
    return (tmp_path / "out").read_text(), (tmp_path / "err").read_text()


def test_limits_and_hardening_are_applied(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["env"], cpus=0.5, memory_mib=96, env={"SEED": "7"})
    status = runtime.wait(handle, 30)
    assert status is not None and status.exit_code == 0 and status.reason is ExitReason.EXITED

    attrs = runtime.client.api.inspect_container(handle)
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 96 * 1024 * 1024
    assert host["PidsLimit"] == 4096
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert host["RestartPolicy"]["Name"] in ("", "no")
    assert host["AutoRemove"] is False
    assert host["Init"] is True
    assert not host.get("DeviceRequests")
    binds = (host.get("Binds") or []) + [m.get("Source", "") for m in attrs.get("Mounts", [])]
    assert not any("docker.sock" in b for b in binds)
    assert attrs["Config"]["Labels"] == {"gpuq.job": f"job-{node}", "gpuq.attempt": "1", "gpuq.node": node,
                                         "gpuq.replica": "0"}

    out, _ = logs(runtime, handle, tmp_path)
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["GPUQ_CPUS"] == "0.5"
    assert env["GPUQ_MEMORY_MIB"] == "96"
    assert env["GPUQ_JOB_ID"] == f"job-{node}" and env["GPUQ_NODE"] == node
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["SEED"] == "7"


def test_exit_code_and_separate_streams(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    status = runtime.wait(handle, 30)
    assert status.exit_code == 3 and status.reason is ExitReason.EXITED
    assert logs(runtime, handle, tmp_path) == ("out\n", "err\n")


def test_wait_returns_none_while_running(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["sleep", "30"])
    t0 = time.monotonic()
    assert runtime.wait(handle, 0.5) is None
    assert runtime.wait(handle, 0) is None
    assert time.monotonic() - t0 < 5


def test_memory_limit_kills_with_oom(runtime, tmp_path, image, node):
    # tail keeps the whole "last line" of /dev/zero (it has no newline) in memory.
    handle = launch(runtime, tmp_path, image, node, ["sh", "-c", "head -c 300m /dev/zero | tail > /dev/null"],
                    memory_mib=32)
    status = runtime.wait(handle, 60)
    assert status.reason is ExitReason.OOM_KILLED
    assert status.exit_code == 137


def test_stop_with_grace(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["sleep", "600"])
    t0 = time.monotonic()
    runtime.stop(handle, grace_s=10)
    status = runtime.wait(handle, 10)
    assert status.reason is ExitReason.STOPPED
    assert status.exit_code in (143, 137)
    # The init process forwards SIGTERM, so sleep dies at once rather than at the grace's end.
    assert status.exit_code == 143 and time.monotonic() - t0 < 8


def test_stop_kills_after_grace_when_term_is_ignored(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
    time.sleep(0.5)  # let the shell install its trap
    t0 = time.monotonic()
    runtime.stop(handle, grace_s=1)
    status = runtime.wait(handle, 10)
    assert status.exit_code == 137 and status.reason is ExitReason.STOPPED
    assert 0.9 < time.monotonic() - t0 < 8


@pytest.mark.parametrize("bad", ["gpuq-no-such-image:latest", "Not A Valid Ref!!"])
def test_bad_image_fails_fast(runtime, tmp_path, node, bad):
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match="image"):
        launch(runtime, tmp_path, bad, node, ["true"])
    assert time.monotonic() - t0 < 15
    assert runtime.adopt(node) == []


def test_missing_binary_is_a_start_failure(runtime, tmp_path, image, node):
    # The init process runs argv, so the engine starts the container fine and
    # the failure shows as tini's exit 127 with its FATAL line.
    handle = launch(runtime, tmp_path, image, node, ["/no/such/binary"])
    status = runtime.wait(handle, 30)
    assert status.reason is ExitReason.START_FAILED and status.exit_code == 127
    assert "/no/such/binary" in status.message


def test_missing_binary_without_init_is_a_launch_error(image, node, tmp_path):
    rt = DockerRuntime(init=False)
    try:
        with pytest.raises(LaunchError, match="cannot start"):
            launch(rt, tmp_path, image, node, ["/no/such/binary"])
        assert rt.adopt(node) == []
    finally:
        for adopted in rt.adopt(node):
            rt.cleanup(adopted.handle)


def test_exit_127_of_the_job_itself_is_a_plain_exit(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["sh", "-c", "exit 127"])
    assert runtime.wait(handle, 30).reason is ExitReason.EXITED


def test_gpu_request_on_engine_without_gpus_is_a_launch_error(runtime, tmp_path, image, node):
    info = runtime.client.info()
    if "nvidia" in (info.get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    with pytest.raises(LaunchError):
        launch(runtime, tmp_path, image, node, ["true"], gpu_uuids=["GPU-00000000-0000-0000-0000-000000000000"])
    assert runtime.adopt(node) == []


def test_relaunch_of_same_attempt_is_idempotent(runtime, tmp_path, image, node):
    first = launch(runtime, tmp_path, image, node, ["sleep", "30"])
    again = launch(runtime, tmp_path, image, node, ["sleep", "30"])
    assert first == again
    assert [a.handle for a in runtime.adopt(node)] == [first]


def test_adopt_after_agent_restart(runtime, tmp_path, image, node):
    running = launch(runtime, tmp_path, image, node, ["sleep", "30"], job_id="run")
    exited = launch(runtime, tmp_path, image, node, ["sh", "-c", "exit 5"], job_id="done")
    assert runtime.wait(exited, 30).exit_code == 5

    fresh = DockerRuntime()  # a new agent process knows nothing
    found = {a.job_id: a for a in fresh.adopt(node)}
    assert set(found) == {"run", "done"}
    assert found["run"].handle == running and found["run"].attempt == 1
    assert fresh.wait(found["run"].handle, 0) is None
    assert fresh.wait(found["done"].handle, 0).exit_code == 5
    assert DockerRuntime().adopt("some-other-node") == [] or all(
        a.handle not in (running, exited) for a in DockerRuntime().adopt("some-other-node")
    )


def test_cleanup_is_idempotent(runtime, tmp_path, image, node):
    handle = launch(runtime, tmp_path, image, node, ["sleep", "30"])
    runtime.cleanup(handle)
    runtime.cleanup(handle)
    assert runtime.adopt(node) == []
    lost = runtime.wait(handle, 0)
    assert lost.reason is ExitReason.LOST
    runtime.stop(handle, grace_s=1)  # stopping a gone container is fine too
    runtime.collect_logs(handle, stdout_path=tmp_path / "out", stderr_path=tmp_path / "err")  # a no-op


def test_unreachable_engine_is_a_typed_error(tmp_path, node):
    import docker

    from workers.runtime.docker import DockerUnavailable

    rt = DockerRuntime(client=docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41"))
    with pytest.raises(DockerUnavailable):
        rt.adopt(node)
    with pytest.raises(DockerUnavailable):
        launch(rt, tmp_path, "img", node, ["true"])


def test_block_job_starts_its_mps_daemon_then_needs_a_gpu_runtime(image, node, tmp_path, monkeypatch):
    import os

    from workers.gpu.mps import MpsControl

    stub = Path(__file__).resolve().parents[1] / "fixtures" / "bin"
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")
    mps = MpsControl(root=tmp_path / "mps", isolate_shm=False)
    rt = DockerRuntime(mps=mps)
    if "nvidia" in (rt.client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    gpu = "GPU-00000000-0000-0000-0000-000000000001"
    try:
        with pytest.raises(LaunchError):
            launch(rt, tmp_path, image, node, ["true"], gpu_uuids=[gpu], blocks=25, gpu_memory_mib=1024)
        assert mps.is_running(gpu)  # the daemon came first
        assert rt.adopt(node) == []
    finally:
        mps.stop(gpu)
        for adopted in rt.adopt(node):
            rt.cleanup(adopted.handle)

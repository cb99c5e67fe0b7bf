"""MpsControl against the stub nvidia-cuda-mps-control (tests/fixtures/bin) on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from workers.gpu.mps import MpsControl, MpsStartError, mps_client_env

STUB_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "bin"
GPU = "GPU-11111111-2222-3333-4444-555555555555"
MIG = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def stub_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STUB_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GPUQ_MPS_STUB_LOG", str(tmp_path / "calls.log"))
    return tmp_path / "calls.log"


@pytest.fixture
def control(stub_path, tmp_path):
    ctl = MpsControl(root=tmp_path / "mps", isolate_shm=False)
    yield ctl
    for uuid in (GPU, MIG):
        ctl.stop(uuid)


def test_start_is_per_device_with_its_env(control, stub_path):
    d = control.ensure_started(GPU)
    assert control.is_running(GPU) and not control.is_running(MIG)
    assert (d.pipe_dir / "control").exists()
    calls = stub_path.read_text()
    assert (f"args=[-d] CUDA_VISIBLE_DEVICES={GPU} CUDA_MPS_PIPE_DIRECTORY={d.pipe_dir} "
            f"CUDA_MPS_LOG_DIRECTORY={d.log_dir}") in calls
    m = control.ensure_started(MIG)
    assert m.pipe_dir != d.pipe_dir and control.is_running(MIG)


def test_ensure_started_is_idempotent(control, stub_path):
    first = control.ensure_started(GPU)
    second = control.ensure_started(GPU)
    assert first == second
    assert stub_path.read_text().count("args=[-d]") == 1


def test_stop_sends_quit_with_same_env_and_is_idempotent(control, stub_path):
    d = control.ensure_started(GPU)
    pid = int((d.pipe_dir / "nvidia-cuda-mps-control.pid").read_text())
    control.stop(GPU)
    assert not control.is_running(GPU)
    calls = stub_path.read_text()
    assert f"args=[] CUDA_VISIBLE_DEVICES={GPU} CUDA_MPS_PIPE_DIRECTORY={d.pipe_dir}" in calls
    assert "cmd=quit" in calls
    control.stop(GPU)  # no daemon: no-op, no call
    assert stub_path.read_text().count("cmd=quit") == 1
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the stand-in daemon was killed
            os.kill(pid, 0)
            subprocess.run(["sleep", "0.02"], check=False)


def test_restart_after_stop(control):
    control.ensure_started(GPU)
    control.stop(GPU)
    control.ensure_started(GPU)
    assert control.is_running(GPU)


def test_client_env():
    ctl = MpsControl(root=Path("/srv/mps"), isolate_shm=True)
    env = ctl.client_env(MIG, blocks=30, memory_mib=10240)
    assert env == {
        "CUDA_MPS_PIPE_DIRECTORY": f"/srv/mps/{MIG}/pipe",
        "CUDA_MPS_LOG_DIRECTORY": f"/srv/mps/{MIG}/log",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=10240M",
    }
    assert ctl.daemon(MIG).shm_dir == Path(f"/srv/mps/{MIG}/shm")
    assert MpsControl(root=Path("/srv/mps"), isolate_shm=False).daemon(MIG).shm_dir == Path("/dev/shm")


@pytest.mark.parametrize("blocks, memory_mib", [(0, 100), (101, 100), (50, 0)])
def test_client_env_refuses_bad_shares(blocks, memory_mib):
    with pytest.raises(ValueError):
        mps_client_env(MpsControl(root=Path("/x")).daemon(GPU), blocks=blocks, memory_mib=memory_mib)


def test_missing_binary_is_a_typed_error(tmp_path):
    ctl = MpsControl(root=tmp_path, binary="/nonexistent/nvidia-cuda-mps-control", isolate_shm=False)
    with pytest.raises(MpsStartError, match="not found"):
        ctl.ensure_started(GPU)


def test_failing_daemon_reports_its_output(tmp_path):
    failing = tmp_path / "fail-mps"
    failing.write_text("#!/bin/sh\necho 'no CUDA-capable device' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(MpsStartError, match="exited 3: no CUDA-capable device"):
        MpsControl(root=tmp_path / "mps", binary=str(failing), isolate_shm=False).ensure_started(GPU)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare --mount")
def test_isolated_shm_daemon_writes_its_own_dir(stub_path, tmp_path, monkeypatch):
    marker = f"gpuq-mps-stub-{os.getpid()}-{tmp_path.name}"
    monkeypatch.setenv("GPUQ_MPS_STUB_MARKER", marker)
    ctl = MpsControl(root=tmp_path / "mps", isolate_shm=True)
    try:
        d = ctl.ensure_started(GPU)
        # The stub drops a marker in "its" /dev/shm: it must land in the per-daemon dir.
        assert (d.shm_dir / marker).read_text().strip() == GPU
        assert not (Path("/dev/shm") / marker).exists()
    finally:
        ctl.stop(GPU)
        (Path("/dev/shm") / marker).unlink(missing_ok=True)

"""The bare-process runtime: exact environment, process groups, stop with grace, start failures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from workers.messages import LaunchSpec
from workers.runtime.base import ExitReason, LaunchError
from workers.runtime.process import ProcessRuntime


def spec(command: list[str], **kw) -> LaunchSpec:
    return LaunchSpec(job_id="j1", attempt=1, node_name="n", command=command, **kw)


def run(tmp_path: Path, s: LaunchSpec, timeout_s: float = 10):
    rt = ProcessRuntime(work_dir=tmp_path / "work")
    out, err = tmp_path / "out", tmp_path / "err"
    handle = rt.launch(s, stdout_path=out, stderr_path=err)
    status = rt.wait(handle, timeout_s)
    rt.cleanup(handle)
    return status, out.read_text(), err.read_text()


def test_environment_is_exactly_the_allocation(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GPUQ_TOKEN", "secret-of-the-agent")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    s = spec(["env"], env={"MY_VAR": "x"}, gpu_uuids=["GPU-aaa"], blocks=25, gpu_memory_mib=10240)
    status, out, _ = run(tmp_path, s)
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert status.exit_code == 0 and status.reason is ExitReason.EXITED
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-aaa"
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=10240M"
    assert env["MY_VAR"] == "x"
    assert "GPUQ_TOKEN" not in env, "the agent's environment must not leak into jobs"


def test_cpu_only_job_sees_no_gpu(tmp_path: Path) -> None:
    _status, out, _ = run(tmp_path, spec(["env"]))
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env


def test_reserved_job_env_is_refused_and_the_allocation_is_set_last(tmp_path: Path) -> None:
    # The API refuses these names; the runtime refuses them too (a spec may have bypassed the API),
    # and its environment still puts the allocation last.
    s = spec(["sh", "-c", f"touch {tmp_path / 'ran'}"], env={"CUDA_VISIBLE_DEVICES": "all"}, gpu_uuids=["GPU-b"])
    with pytest.raises(LaunchError, match="CUDA_VISIBLE_DEVICES"):
        ProcessRuntime().launch(s, stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    assert not (tmp_path / "ran").exists(), "nothing was started"
    assert ProcessRuntime().environment(s)["CUDA_VISIBLE_DEVICES"] == "GPU-b"


def test_exit_code_and_stderr(tmp_path: Path) -> None:
    status, out, err = run(tmp_path, spec(["sh", "-c", "echo o; echo e >&2; exit 7"]))
    assert status.exit_code == 7 and out == "o\n" and err == "e\n"


def test_missing_binary_is_a_launch_error(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    with pytest.raises(LaunchError, match="nonexistent"):
        rt.launch(spec(["/nonexistent"]), stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    pidfile = tmp_path / "child.pid"
    handle = rt.launch(spec(["sh", "-c", f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"]),
                       stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pidfile.read_text())
    started = time.monotonic()
    rt.stop(handle, grace_s=0.5)  # the group ignores SIGTERM (inherited): SIGKILL after the grace
    status = rt.wait(handle, 5)
    assert status.reason is ExitReason.STOPPED
    assert 0.4 <= time.monotonic() - started < 5
    time.sleep(0.1)
    assert not _alive(child), "the background child must die with its group"
    rt.cleanup(handle)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (containers' PID 1 may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_first(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    out = tmp_path / "o"
    handle = rt.launch(spec(["sh", "-c", "trap 'echo term; exit 143' TERM; sleep 60 & wait"]),
                       stdout_path=out, stderr_path=tmp_path / "e")
    time.sleep(0.2)
    rt.stop(handle, grace_s=5)
    status = rt.wait(handle, 5)
    assert status.exit_code == 143 and "term" in out.read_text()

"""Bare-process limits that hold: memory (OOM kill), CPU quota, pids, and nothing left behind."""

from __future__ import annotations

import time
from pathlib import Path

from tests.isolation.conftest import alive, spec
from workers.runtime.base import ExitReason
from workers.runtime.process import ProcessRuntime

PY = "/usr/bin/python3"  # the job user cannot reach the venv under /work


def run(rt: ProcessRuntime, tmp_path: Path, s, timeout_s: float = 20):
    out, err = tmp_path / f"{s.job_id}.out", tmp_path / f"{s.job_id}.err"
    handle = rt.launch(s, stdout_path=out, stderr_path=err)
    status = rt.wait(handle, timeout_s)
    rt.cleanup(handle)
    return status, out.read_text(), err.read_text()


def test_memory_limit_kills_a_job_that_allocates_more(runtime: ProcessRuntime, tmp_path: Path) -> None:
    hog = "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    status, out, _err = run(runtime, tmp_path, spec([PY, "-c", hog], memory_mib=64))
    assert status is not None and status.reason is ExitReason.OOM_KILLED, status
    assert "limit 64 MiB" in status.message
    assert "survived" not in out


def test_memory_under_the_limit_runs(runtime: ProcessRuntime, tmp_path: Path) -> None:
    status, out, _ = run(runtime, tmp_path, spec([PY, "-c", "b = bytearray(8 << 20); print('ok')"], memory_mib=64))
    assert status is not None and status.reason is ExitReason.EXITED and status.exit_code == 0 and out == "ok\n"


def test_half_a_cpu_gets_half_a_cpu(runtime: ProcessRuntime, tmp_path: Path) -> None:
    spin = ("import os, time\nt = time.time()\nwhile time.time() - t < 4: pass\n"
            "u = os.times(); print(u.user + u.system)")
    status, out, _ = run(runtime, tmp_path, spec([PY, "-c", spin], cpus=0.5))
    assert status is not None and status.exit_code == 0, status
    cpu_s = float(out)
    assert 0.5 < cpu_s <= 2.5, f"0.5 CPU for 4 s got {cpu_s:.2f} CPU-s"


def test_fork_bomb_stops_at_the_pids_limit(runtime: ProcessRuntime, tmp_path: Path) -> None:
    bomb = ("import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n"
            "            time.sleep(60)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
            "    print(n, e.errno)\n")
    started = time.monotonic()
    status, out, _ = run(runtime, tmp_path, spec([PY, "-c", bomb]))
    assert status is not None and status.exit_code == 0, status
    forked = int(out.split()[0])
    assert forked < runtime.pids_max, f"forked {forked} children past pids.max={runtime.pids_max}"
    assert time.monotonic() - started < 15, "the sleeping children died with the group, not after 60 s"


def _daemon(pidfile: Path) -> list[str]:
    return ["sh", "-c", f"setsid nohup sleep 1000 >/dev/null 2>&1 & echo $! > {pidfile}; sleep 0.2"]


def _wait_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the job never wrote its daemon's pid"
        time.sleep(0.02)
    return int(pidfile.read_text())


def test_a_setsid_daemon_dies_when_the_job_ends(runtime: ProcessRuntime, tmp_path: Path, work_root: Path) -> None:
    pidfile = work_root / "daemon.pid"
    work_root.chmod(0o777)  # the job user writes the pid file
    status, _, _ = run(runtime, tmp_path, spec(_daemon(pidfile)))
    assert status is not None and status.exit_code == 0, status
    daemon = _wait_pid(pidfile)
    assert not alive(daemon), "a setsid/nohup daemon outlived its job"


def test_a_setsid_daemon_dies_when_the_job_is_stopped(runtime: ProcessRuntime, tmp_path: Path,
                                                      work_root: Path) -> None:
    pidfile = work_root / "daemon.pid"
    work_root.chmod(0o777)
    s = spec(["sh", "-c", f"setsid nohup sleep 1000 >/dev/null 2>&1 & echo $! > {pidfile}; sleep 60"])
    handle = runtime.launch(s, stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    daemon = _wait_pid(pidfile)
    runtime.stop(handle, grace_s=0.5)
    status = runtime.wait(handle, 5)
    assert status is not None and status.reason is ExitReason.STOPPED
    runtime.cleanup(handle)
    assert not alive(daemon), "a setsid/nohup daemon outlived the stop"

"""The agent's sampler attributes NVML process samples to the jobs holding the GPUs."""

from __future__ import annotations

from workers.gpu.nvml import ProcessSample
from workers.sampler import attribute


def _s(uuid: str, pid: int, sm: float | None, mem: int) -> ProcessSample:
    return ProcessSample(gpu_uuid=uuid, pid=pid, sm_percent=sm, memory_used_mib=mem, timestamp_us=0)


def test_a_gpu_held_by_one_job_is_that_jobs() -> None:
    holders = {"GPU-a": [("j1", 1, 0, "docker-id")], "GPU-b": [("j1", 1, 0, "docker-id")]}
    out = attribute([_s("GPU-a", 11, 40, 100), _s("GPU-a", 12, 30, 50)], holders, 30.0)
    by_gpu = {o["gpu_uuid"]: o for o in out}
    assert by_gpu["GPU-a"]["sm_percent"] == 70 and by_gpu["GPU-a"]["memory_used_mib"] == 150
    assert by_gpu["GPU-b"]["sm_percent"] == 0.0  # held but no process on it: idle, and said so
    assert all(o["window_s"] == 30.0 and o["job_id"] == "j1" for o in out)


def test_a_shared_gpu_is_attributed_by_pid_or_not_at_all() -> None:
    holders = {"GPU-s": [("j1", 1, 0, "101"), ("j2", 1, 0, "202")]}
    out = attribute([_s("GPU-s", 101, 20, 10), _s("GPU-s", 202, None, 30), _s("GPU-s", 999, 90, 99)], holders, 5.0)
    assert sorted((o["job_id"], o["sm_percent"], o["memory_used_mib"]) for o in out) == [
        ("j1", 20, 10), ("j2", None, 30)]

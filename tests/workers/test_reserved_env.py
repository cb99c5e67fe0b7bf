"""One list of reserved environment names, refused by the API and by both runtimes.

The runtimes refuse even when the API was bypassed (a spec sent straight to
an agent's queue): nothing is started, and the error names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from workers.messages import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES, LaunchSpec, reserved_env_name
from workers.runtime.base import LaunchError
from workers.runtime.docker import DockerRuntime
from workers.runtime.process import ProcessRuntime

# Every reserved name, and for each prefix the variables that matter most under it.
RESERVED = [
    *sorted(RESERVED_ENV_NAMES), "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_MPS_PIPE_DIRECTORY",
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "GPUQ_JOB_ID", "GPUQ_TOKEN",
]


def test_the_list_covers_what_gpuq_sets_itself() -> None:
    from workers.runtime.limits import limits_env

    spec = LaunchSpec(job_id="j", attempt=1, node_name="n", command=["true"], gpu_uuids=["GPU-a"], blocks=10,
                      gpu_memory_mib=100, cpus=1, memory_mib=10, time_limit_s=5)
    assert all(reserved_env_name(name) for name in limits_env(spec)), "a job could override its own allocation"
    assert {p.rstrip("_") for p in RESERVED_ENV_PREFIXES} >= {"NVIDIA", "CUDA_MPS", "GPUQ"}
    for harmless in ("SEED", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING", "NVIDIA", "PATH"):
        assert not reserved_env_name(harmless), harmless


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_name_is_refused_by_the_api(name: str, api: TestClient, actors) -> None:
    body = {"command": ["true"], "resources": {"gpus": 0}, "env": {"SEED": "1", name: "x"}}
    response = api.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {actors.admin}"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "env" and name in response.json()["detail"]


def _spec(name: str, **kw: Any) -> LaunchSpec:
    return LaunchSpec(job_id="j", attempt=1, node_name="n", env={"SEED": "1", name: "x"}, **kw)


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_name_is_refused_by_the_process_runtime(name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    with pytest.raises(LaunchError, match=name):
        ProcessRuntime().launch(_spec(name, command=["touch", str(ran)]), stdout_path=tmp_path / "o",
                                stderr_path=tmp_path / "e")
    assert not ran.exists()


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_name_is_refused_by_the_docker_runtime(name: str, tmp_path: Path) -> None:
    # Refused before the engine is touched: any use of this client would raise AttributeError, not LaunchError.
    runtime = DockerRuntime(client=object())
    for extra in ({}, {"gpu_uuids": ["GPU-a"], "blocks": 10, "gpu_memory_mib": 100}):  # a block job too (MPS)
        with pytest.raises(LaunchError, match=name):
            runtime.launch(_spec(name, command=["true"], image="busybox", **extra), stdout_path=tmp_path / "o",
                           stderr_path=tmp_path / "e")

"""container_config: the arguments a container gets, checked without an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.gpu.mps import MpsDaemon
from workers.messages import LaunchSpec
from workers.runtime.base import LaunchError
from workers.runtime.docker import container_config, container_name

GPU_A = "GPU-11111111-2222-3333-4444-555555555555"
GPU_B = "GPU-66666666-7777-8888-9999-000000000000"
MIG_A = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def spec(**kw) -> LaunchSpec:
    base = {"job_id": "j-1", "attempt": 2, "node_name": "node-a", "command": ["python", "train.py"], "image": "img:1"}
    return LaunchSpec(**{**base, **kw})


def daemon(uuid: str) -> MpsDaemon:
    root = Path("/var/lib/gpuq/mps") / uuid
    return MpsDaemon(uuid=uuid, pipe_dir=root / "pipe", log_dir=root / "log", shm_dir=root / "shm")


def test_hardening_and_limits():
    cfg = container_config(spec(cpus=1.5, memory_mib=512), pids_limit=256)
    assert cfg["nano_cpus"] == 1_500_000_000
    assert cfg["mem_limit"] == cfg["memswap_limit"] == "512m"
    assert cfg["pids_limit"] == 256
    assert cfg["cap_drop"] == ["ALL"]
    assert cfg["security_opt"] == ["no-new-privileges"]
    assert cfg["privileged"] is False
    assert cfg["network_mode"] == "none"
    assert cfg["volumes"] == {}
    assert "restart_policy" not in cfg and "auto_remove" not in cfg
    assert cfg["command"] == ["python", "train.py"]
    assert cfg["labels"] == {"gpuq.job": "j-1", "gpuq.attempt": "2", "gpuq.node": "node-a", "gpuq.replica": "0"}


def test_no_gpus_means_no_device_request_and_void():
    cfg = container_config(spec())
    assert cfg["device_requests"] == []
    assert cfg["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert cfg["environment"]["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize("uuids", [[GPU_A], [GPU_B, GPU_A], [MIG_A]])
def test_gpus_only_through_device_requests_by_uuid(uuids):
    cfg = container_config(spec(gpu_uuids=uuids))
    (req,) = cfg["device_requests"]
    assert req["DeviceIDs"] == uuids  # allocation order kept
    assert req["Capabilities"] == [["gpu"]]
    assert req.get("Count", 0) == 0  # never "all"
    assert cfg["environment"]["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert cfg["environment"]["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert cfg["environment"]["GPUQ_GPU_UUIDS"] == ",".join(uuids)


def test_block_job_mounts_mps_and_sets_share():
    d = daemon(GPU_A)
    cfg = container_config(spec(gpu_uuids=[GPU_A], blocks=25, gpu_memory_mib=2048), mps_daemon=d)
    env = cfg["environment"]
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(d.pipe_dir)
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=2048M"
    assert cfg["volumes"] == {
        str(d.pipe_dir): {"bind": str(d.pipe_dir), "mode": "rw"},
        str(d.shm_dir): {"bind": "/dev/shm", "mode": "rw"},
    }
    assert not any("docker.sock" in path for path in cfg["volumes"])


@pytest.mark.parametrize(
    "kw, mps, message",
    [
        ({"gpu_uuids": [GPU_A], "blocks": 25, "gpu_memory_mib": 1024}, None, "MPS daemon"),
        ({"gpu_uuids": [GPU_A, GPU_B], "blocks": 25, "gpu_memory_mib": 1024}, GPU_A, "exactly one"),
        ({"gpu_uuids": [GPU_A], "blocks": 25}, GPU_A, "gpu_memory_mib"),
        ({"gpu_uuids": [GPU_A], "blocks": 101, "gpu_memory_mib": 1024}, GPU_A, "1..100"),
        ({"gpu_uuids": [GPU_A], "blocks": 10, "gpu_memory_mib": 1024}, GPU_B, "MPS daemon"),
    ],
)
def test_bad_block_specs_refused(kw, mps, message):
    with pytest.raises(LaunchError, match=message):
        container_config(spec(**kw), mps_daemon=daemon(mps) if mps else None)


@pytest.mark.parametrize(
    "name", ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY",
             "LD_PRELOAD", "GPUQ_JOB_ID"]
)
def test_reserved_env_refused(name):
    with pytest.raises(LaunchError, match=name):
        container_config(spec(env={name: "all"}))


def test_user_env_passed_through():
    cfg = container_config(spec(env={"SEED": "7", "CUDA_LAUNCH_BLOCKING": "1"}))
    assert cfg["environment"]["SEED"] == "7"
    assert cfg["environment"]["CUDA_LAUNCH_BLOCKING"] == "1"


@pytest.mark.parametrize("command", [[], "python train.py"])
def test_command_must_be_argv(command):
    with pytest.raises(LaunchError, match="argv"):
        container_config(spec(command=command))


def test_image_required():
    with pytest.raises(LaunchError, match="image"):
        container_config(spec(image=None))


def test_name_is_per_attempt_and_replica_and_safe():
    assert container_name(spec(job_id="a/b c", attempt=3, replica=1)) == "gpuq-a_b_c-a3-r1"


def test_block_job_on_runtime_without_mps_is_refused_before_touching_docker(tmp_path):
    from workers.runtime.docker import DockerRuntime

    rt = DockerRuntime(client=object())  # any use of the client would fail loudly
    with pytest.raises(LaunchError, match="MPS"):
        rt.launch(spec(gpu_uuids=[GPU_A], blocks=10, gpu_memory_mib=100), stdout_path=tmp_path / "o",
                  stderr_path=tmp_path / "e")


def test_public_surfaces_are_complete():
    import tests.support.fake_nvml as fake_nvml
    import workers.gpu.mig_apply as mig_apply
    import workers.gpu.mps as mps
    import workers.gpu.nvml as nvml
    import workers.runtime.docker as docker_runtime

    for module in (docker_runtime, nvml, fake_nvml, mps, mig_apply):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and getattr(value, "__module__", None) == module.__name__
            and (isinstance(value, type) or callable(value))
        }
        assert public <= set(module.__all__), (module.__name__, public - set(module.__all__))


@pytest.mark.parametrize("raised, typed", [
    # An engine that stops mid-answer cuts the chunked response short: that is the engine going away.
    ("chunked", "DockerUnavailable"),
    ("connection", "DockerUnavailable"),
    ("api-409", "DockerError"),  # an answer (APIError is a requests HTTPError too): not "unreachable"
])
def test_engine_errors_are_typed(raised: str, typed: str) -> None:
    import docker.errors
    import requests

    from workers.runtime import docker as runtime

    errors = {
        "chunked": requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(3873 bytes read)"),
        "connection": requests.exceptions.ConnectionError("refused"),
        "api-409": docker.errors.APIError("conflict", explanation="name in use"),
    }
    with pytest.raises((runtime.DockerUnavailable, runtime.DockerError)) as caught, \
            runtime._docker_errors("inspect abc"):
        raise errors[raised]
    assert type(caught.value).__name__ == typed
    assert str(caught.value).startswith("inspect abc: ")

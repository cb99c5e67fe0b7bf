"""The environment that carries an allocation's limits into a job (both runtimes use it)."""

from __future__ import annotations

from workers.messages import LaunchSpec


def limits_env(spec: LaunchSpec) -> dict[str, str]:
    """Device and MPS variables for one attempt.

    - ``CUDA_VISIBLE_DEVICES``: exactly the allocated GPU / MIG UUIDs, in
      allocation order; empty for a CPU-only job, so it sees no GPU at all.
    - Block jobs: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` = blocks (1 block = 1 %
      of the SMs) and ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` = ``0=<MiB>M`` (device
      index 0 as the job sees it, because it sees only its one GPU).
    """
    env = {
        "CUDA_VISIBLE_DEVICES": ",".join(spec.gpu_uuids),
        "NVIDIA_VISIBLE_DEVICES": ",".join(spec.gpu_uuids) or "void",
        "GPUQ_GPU_UUIDS": ",".join(spec.gpu_uuids),
    }
    if spec.blocks is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(spec.blocks)
        if spec.gpu_memory_mib is not None:
            env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={spec.gpu_memory_mib}M"
    if spec.cpus is not None:
        env["GPUQ_CPUS"] = f"{spec.cpus:g}"
    if spec.memory_mib is not None:
        env["GPUQ_MEMORY_MIB"] = str(spec.memory_mib)
    if spec.time_limit_s is not None:
        env["GPUQ_TIME_LIMIT_S"] = str(spec.time_limit_s)
    return env

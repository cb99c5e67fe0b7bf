"""The environment that carries an allocation's limits into a job (both runtimes use it)."""

from __future__ import annotations

from workers.messages import LaunchSpec


def job_env(spec: LaunchSpec) -> dict[str, str]:
    """The ``GPUQ_*`` variables telling a job who it is and what it was given (every runtime sets them)."""
    env = {
        "GPUQ_JOB_ID": spec.job_id,
        "GPUQ_ATTEMPT": str(spec.attempt),
        "GPUQ_NODE": spec.node_name,
        "GPUQ_REPLICA": str(spec.replica),
        "GPUQ_REPLICAS": str(spec.replicas),
        "GPUQ_GPU_UUIDS": ",".join(spec.gpu_uuids),
    }
    optional = {
        "GPUQ_CPUS": None if spec.cpus is None else f"{spec.cpus:g}",
        "GPUQ_MEMORY_MIB": spec.memory_mib,
        "GPUQ_BLOCKS": spec.blocks,
        "GPUQ_GPU_MEMORY_MIB": spec.gpu_memory_mib,
        "GPUQ_TIME_LIMIT_S": spec.time_limit_s,
        "GPUQ_ARRAY_ID": spec.array_id,  # a job array's task (Slurm's SLURM_ARRAY_JOB_ID / _TASK_ID)
        "GPUQ_ARRAY_INDEX": spec.array_index,
    }
    env.update({k: str(v) for k, v in optional.items() if v is not None})
    return env


def limits_env(spec: LaunchSpec) -> dict[str, str]:
    """``job_env`` plus the device and MPS variables for one attempt (the bare-process runtime's set).

    - ``CUDA_VISIBLE_DEVICES``: exactly the allocated GPU / MIG UUIDs, in
      allocation order; empty for a CPU-only job, so it sees no GPU at all.
    - Block jobs: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` = blocks (1 block = 1 %
      of the SMs) and ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` = ``0=<MiB>M`` (device
      index 0 as the job sees it, because it sees only its one GPU).
    """
    env = job_env(spec)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids)
    env["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids) or "void"
    if spec.blocks is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(spec.blocks)
        if spec.gpu_memory_mib is not None:
            env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={spec.gpu_memory_mib}M"
    return env

"""The launch spec: what an agent needs to run one replica of one attempt, and nothing more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from queue_service.db.models import Allocation, Job
from queue_service.lifecycle.grace import of_class
from queue_service.settings import PriorityClass, Settings
from workers.messages import LaunchSpec


def launch_spec(job: Job, attempt: int, replica: int, node_name: str, rows: Sequence[Allocation], *,
                classes: Mapping[str, PriorityClass], settings: Settings) -> LaunchSpec:
    """One replica's spec from its allocation rows; ``classes`` are the effective (database-first) ones.

    The grace period is the job's class's (``lifecycle.grace``), so an
    operator's ``gpuq class set NAME --grace S`` holds at the time limit too.
    """
    blocks_row = next((r for r in rows if r.kind == "blocks"), None)
    gpu_rows = [r for r in rows if r.gpu_uuid]
    devices = [r.mig_uuid or r.gpu_uuid or "" for r in gpu_rows]  # MIG UUID once carved, else the GPU's
    # MIG instances not carved yet: a whole one (kind mig) or a shared one blocks jobs stack on (kind blocks)
    mig_slices = [
        {"index": i, "gpu_uuid": r.gpu_uuid, "profile": r.mig_profile, "start": r.mig_start}
        | ({"shared": True} if r.kind == "blocks" else {})
        for i, r in enumerate(gpu_rows)
        if r.mig_uuid is None and r.mig_start is not None and r.kind in ("mig", "blocks")
    ]
    return LaunchSpec(
        job_id=job.id, attempt=attempt, node_name=node_name, command=list(job.command), image=job.image,
        env=dict(job.env),  # the runtimes add GPUQ_* and the device / MPS variables
        gpu_uuids=devices,
        mig_slices=mig_slices,
        blocks=blocks_row.blocks if blocks_row else None,
        gpu_memory_mib=blocks_row.gpu_memory_mib if blocks_row else None,
        mig_shared=blocks_row is not None and blocks_row.mig_start is not None,
        cpus=job.cpus or None, memory_mib=job.memory_mib or None, time_limit_s=job.time_limit_s,
        grace_s=of_class(classes, job.priority_class, default_s=settings.default_grace_s),
        replica=replica, replicas=job.replicas, workdir=job.workdir, volumes=list(job.volumes or []),
        array_id=job.array_id, array_index=job.array_index,
        output=job.output_path, error=job.error_path, job_name=job.name,
    )

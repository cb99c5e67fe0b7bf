"""What real hardware cannot change by itself: filters the repartitioner's proposals for NVML GPUs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.types import ClusterState, GpuMode, Request
from queue_service.admission.cycle import Repartitioner
from queue_service.db.models import Gpu, Node


def hardware_aware(session: Session, repartition: Repartitioner | None) -> Repartitioner | None:
    """The repartitioner, minus changes real hardware cannot make on its own.

    On GPUs an agent probed through NVML, MIG mode is the driver's (turning
    it on or off needs root and a GPU reset): a MIG-enabled GPU stays MIG
    (its layout may change), any other stays out of MIG. Simulated GPUs
    may take any mode.
    """
    if repartition is None:
        return None
    rows = session.execute(
        select(Gpu.uuid, Gpu.mig_enabled).join(Node, Node.id == Gpu.node_id).where(Node.gpu_source == "nvml")
    ).all()
    fixed = {uuid: bool(enabled) for uuid, enabled in rows}
    if not fixed:
        return repartition
    inner = repartition

    def propose(cluster: ClusterState, requests: list[Request]) -> list:
        return [c for c in inner(cluster, requests)
                if c.gpu_uuid not in fixed or (c.mode is GpuMode.MIG) == fixed[c.gpu_uuid]]

    return propose

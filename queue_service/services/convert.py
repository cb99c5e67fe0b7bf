"""Translations between database rows and the partitioner's plain values."""

from __future__ import annotations

from typing import NamedTuple

from partitioner.catalog import lookup_model
from partitioner.types import Request
from queue_service.admission.coexistence import Rules
from queue_service.db.models import Job


def model_key(name: str) -> str:
    """The catalogue key for a user- or NVML-given model name ("H100-80GB" -> "h100-80gb")."""
    model = lookup_model(name)
    return model.key if model is not None else name.strip().lower()


RUNTIME_LABEL = "gpuq.runtime."  # + "process" / "docker": what a node's agent runs (its inventory's runtimes)


def runtime_labels(runtimes: list[str]) -> tuple[tuple[str, str], ...]:
    """The node labels that say which runtimes a node allows (the runtime a node allows is the one it gets)."""
    return tuple((RUNTIME_LABEL + kind, "yes") for kind in sorted(runtimes))


class Shape(NamedTuple):
    """What a job asks for, as ``request_for`` reads it, without the ``Job`` entity: hashable, so a cycle
    builds one ``Request`` per distinct shape instead of one per queued job (a tuple: cheap to build for
    thousands of rows each cycle)."""

    gpus: int
    mig_profile: str | None
    mig_count: int
    blocks: int
    gpu_memory_mib: int
    gpu_models: tuple[str, ...]
    cpus: float
    memory_mib: int
    replicas: int
    image: str | None
    workload: str
    avoid_nodes: tuple[str, ...]


def request_for(job: Job | Shape, *, rules: Rules | None = None) -> Request:
    """The partitioner request for one replica of ``job``: a host job needs a node that runs host processes,
    an image job one with a Docker engine."""
    return Request(
        gpus=job.gpus,
        mig_profile=job.mig_profile,
        mig_count=job.mig_count if job.mig_profile else 1,
        blocks=job.blocks,
        gpu_memory_mib=job.gpu_memory_mib,
        gpu_models=tuple(job.gpu_models or ()),
        cpus_milli=round(job.cpus * 1000),
        memory_mib=job.memory_mib,
        replicas=job.replicas,
        node_labels=((RUNTIME_LABEL + ("docker" if job.image else "process"), "yes"),),
        # coexistence: its class, and (given the rules) the classes it may share a GPU and a node with
        workload=job.workload or "",
        gpu_peers=None if rules is None else rules.gpu_peers(job.workload),
        node_peers=None if rules is None else rules.node_peers(job.workload),
        avoid_nodes=tuple(job.avoid_nodes or ()),  # nodes that failed its launches: the last choice
    )

"""What an agent says its node has is checked, not believed: sizes, models, counts, and changes held.

An agent token is bound to one node name; the admin who made it accepted
that host. Its first registration is therefore taken (after the checks
below), so a new node, and the embedded server's own, works at once. After
that the node's GPUs are what was accepted: a later inventory with more
GPUs, GPUs the node never had, or a GPU now claiming another model or more
memory is *held* (``nodes.pending_gpus``) until an admin accepts it
(``POST /v1/nodes/{name}/accept``). Fewer GPUs, or the same ones with a new
MIG layout, are taken at once: they only shrink what the node offers.

Checks on every inventory (a failure is a 422 naming the field):
positive CPU, memory, GPU memory and SM counts; unique GPU UUIDs and
indices; at most ``max_gpus`` GPUs and ``MAX_MIG_DEVICES`` MIG devices per
GPU; a GPU naming a catalogue model may not report more memory than the
model has (plus ``MEMORY_SLACK``), and its MIG devices must be profiles of
that model. GPUs the catalogue does not know still schedule as whole GPUs
or blocks (the catalogue synthesizes a model for them), within the bounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from partitioner.catalog import lookup_model, model_for_nvml
from queue_service.errors import InvalidRequest
from workers.messages import GpuInfo, NodeInventory

MAX_CPUS = 100_000
MAX_MEMORY_MIB = 1 << 32  # 4 PiB: far above any host, far below the BigInteger column
MAX_GPU_MEMORY_MIB = 1 << 21  # 2 TiB per GPU: the Integer column and any real device hold it
MAX_SM_COUNT = 10_000
MAX_MIG_DEVICES = 7  # the most GPU instances any MIG model carves
MEMORY_SLACK = 1.02  # NVML's figure may differ from the catalogue's by a few MiB


def _bad(message: str, field: str = "inventory") -> InvalidRequest:
    return InvalidRequest(f"bad inventory: {message}", field=field)


def validate(inventory: NodeInventory, *, max_gpus: int) -> None:
    """Raise InvalidRequest (422) for an inventory no real node reports."""
    if not 1 <= inventory.cpus <= MAX_CPUS:
        raise _bad(f"cpus must be between 1 and {MAX_CPUS}, not {inventory.cpus}", "inventory.cpus")
    if not 1 <= inventory.memory_mib <= MAX_MEMORY_MIB:
        raise _bad(f"memory_mib must be between 1 and {MAX_MEMORY_MIB}, not {inventory.memory_mib}",
                   "inventory.memory_mib")
    if len(inventory.gpus) > max_gpus:
        raise _bad(f"{len(inventory.gpus)} GPUs is more than a node may have ({max_gpus}, GPUQ_MAX_GPUS_PER_NODE)",
                   "inventory.gpus")
    uuids = [g.uuid for g in inventory.gpus]
    indices = [g.index for g in inventory.gpus]
    if len(set(uuids)) != len(uuids):
        raise _bad("two GPUs share a UUID", "inventory.gpus")
    if len(set(indices)) != len(indices):
        raise _bad("two GPUs share an index", "inventory.gpus")
    for gpu in inventory.gpus:
        _validate_gpu(gpu, max_gpus=max_gpus)


def _validate_gpu(gpu: GpuInfo, *, max_gpus: int) -> None:
    where = f"inventory.gpus[{gpu.index}]"
    if not gpu.uuid or len(gpu.uuid) > 64:
        raise _bad("a GPU UUID must be 1 to 64 characters", where)
    if not 0 <= gpu.index < max_gpus:
        raise _bad(f"GPU index {gpu.index} is outside 0..{max_gpus - 1}", where)
    if not 1 <= gpu.memory_mib <= MAX_GPU_MEMORY_MIB:
        raise _bad(f"GPU {gpu.uuid}: memory_mib must be between 1 and {MAX_GPU_MEMORY_MIB}, not {gpu.memory_mib}",
                   where)
    if not 1 <= gpu.sm_count <= MAX_SM_COUNT:
        raise _bad(f"GPU {gpu.uuid}: sm_count must be between 1 and {MAX_SM_COUNT}, not {gpu.sm_count}", where)
    known = lookup_model(gpu.model or gpu.name)
    if known is not None and gpu.memory_mib > known.memory_mib * MEMORY_SLACK:
        raise _bad(f"GPU {gpu.uuid}: a {known.key} has {known.memory_mib} MiB, not {gpu.memory_mib}", where)
    if len(gpu.mig_devices) > MAX_MIG_DEVICES:
        raise _bad(f"GPU {gpu.uuid}: {len(gpu.mig_devices)} MIG devices (at most {MAX_MIG_DEVICES})", where)
    if gpu.mig_devices and not gpu.mig_enabled:
        raise _bad(f"GPU {gpu.uuid}: MIG devices on a GPU without MIG mode", where)
    for mig in gpu.mig_devices:
        if not 1 <= mig.memory_mib <= gpu.memory_mib:
            raise _bad(f"GPU {gpu.uuid}: MIG device {mig.uuid} memory_mib {mig.memory_mib} is out of range", where)
        if known is not None and known.mig_profile(mig.profile) is None:
            raise _bad(f"GPU {gpu.uuid}: {known.key} has no MIG profile {mig.profile!r}", where)


@dataclass(frozen=True, slots=True)
class Accepted:
    """One GPU as the service accepted it: what a later inventory is compared with."""

    uuid: str
    model: str
    memory_mib: int


def needs_acceptance(accepted: Iterable[Accepted], offered: Iterable[GpuInfo]) -> dict[str, str]:
    """GPU UUID -> why ``offered`` needs an admin's acceptance (empty: it keeps or shrinks what was accepted)."""
    known = {a.uuid: a for a in accepted}
    why: dict[str, str] = {}
    for gpu in offered:
        model = model_for_nvml(gpu.model or gpu.name, gpu.memory_mib, gpu.sm_count).key
        before = known.get(gpu.uuid)
        if before is None:
            why[gpu.uuid] = f"new GPU {gpu.uuid} ({model})"
        elif before.model != model:
            why[gpu.uuid] = f"GPU {gpu.uuid} was a {before.model}, now says {model}"
        elif gpu.memory_mib > before.memory_mib:
            why[gpu.uuid] = f"GPU {gpu.uuid} grew from {before.memory_mib} to {gpu.memory_mib} MiB"
    return why


def summary(gpus: Iterable[GpuInfo | Accepted]) -> str:
    """``2 x h100-80gb`` style: what a set of GPUs is, for audit rows and the node listing."""
    counts: dict[str, int] = {}
    for g in gpus:
        key = g.model if isinstance(g, Accepted) else model_for_nvml(g.model or g.name, g.memory_mib, g.sm_count).key
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {m}" for m, n in sorted(counts.items())) or "no GPUs"

"""What this host has: CPUs, RAM, boot id, and GPUs from NVML or a simulation spec."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from partitioner.catalog import lookup_model
from workers.messages import GpuInfo, NodeInventory

_SIM_NAMESPACE = uuid.UUID("6a1d0c1e-9f57-4a3f-9d2e-67707571aaaa")


class SimulationSpecError(ValueError):
    """A --simulate-gpus spec that cannot be parsed."""


def parse_simulation(spec: str, *, node_name: str) -> list[GpuInfo]:
    """``h100-80gb:2,a100-40gb:1`` -> GpuInfo values with stable fake UUIDs."""
    gpus: list[GpuInfo] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count_text = part.partition(":")
        model = lookup_model(name)
        if model is None:
            raise SimulationSpecError(f"unknown GPU model {name!r} in --simulate-gpus (e.g. h100-80gb, a100-40gb, t4)")
        try:
            count = int(count_text or "1")
        except ValueError:
            raise SimulationSpecError(f"bad count {count_text!r} for {name} in --simulate-gpus") from None
        if not 1 <= count <= 64:
            raise SimulationSpecError(f"count for {name} must be 1..64, got {count}")
        for _ in range(count):
            index = len(gpus)
            gpus.append(GpuInfo(
                uuid=f"GPU-{uuid.uuid5(_SIM_NAMESPACE, f'{node_name}/{index}')}",
                index=index, name=model.display_name, model=model.key,
                memory_mib=model.memory_mib, sm_count=model.sm_count,
            ))
    return gpus


def _memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def probe_gpus(simulate: str | None, *, node_name: str) -> tuple[list[GpuInfo], str, str]:
    """(gpus, source, note): simulated if asked, else NVML, else none with the reason."""
    if simulate:
        return parse_simulation(simulate, node_name=node_name), "simulated", ""
    try:
        from workers.gpu.nvml import probe
    except ImportError as exc:  # pragma: no cover - the module ships with gpuq
        return [], "none", f"NVML probe unavailable: {exc}"
    result = probe()
    return list(result.gpus), result.source, result.note


def host_inventory(*, node_name: str | None, simulate: str | None, runtimes: list[str],
                   limits: str = "env-only") -> NodeInventory:
    hostname = socket.gethostname()
    name = node_name or hostname
    gpus, source, note = probe_gpus(simulate, node_name=name)
    if not gpus and not note:
        note = "no GPUs found"
    return NodeInventory(
        node_name=name, hostname=hostname, boot_id=_boot_id(), cpus=os.cpu_count() or 1,
        memory_mib=_memory_mib(), gpus=gpus, gpu_source=source, gpu_note=note, runtimes=runtimes,
        limits=limits,
    )

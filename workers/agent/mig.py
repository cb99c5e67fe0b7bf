"""MIG carving: create the MIG instances a placement chose, just before the job starts on them.

The admitter may place a job on a MIG slice that does not exist yet
(``LaunchSpec.mig_slices``); the agent creates each instance (beside the
running ones: idle overlapping instances are destroyed, busy ones refuse)
and puts its MIG UUID in ``gpu_uuids`` so the job sees exactly that device.
Afterwards the node re-probes NVML and re-registers, so the service learns
the new devices' UUIDs. Simulated GPUs have nothing to carve: the job keeps
the parent UUID.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from workers.messages import GpuInfo, LaunchSpec, NodeInventory
from workers.runtime.base import LaunchError

log = logging.getLogger(__name__)


class MigCarver:
    """Carves a spec's MIG slices on this node's NVML GPUs."""

    def __init__(self, *, inventory: Callable[[], NodeInventory],
                 report_gpus: Callable[[list[GpuInfo]], None]) -> None:
        self._inventory = inventory  # the node's current inventory (it changes as instances are made)
        self._report_gpus = report_gpus  # re-register with the re-probed GPUs

    def carve(self, spec: LaunchSpec) -> LaunchSpec:
        """``spec`` with the MIG UUIDs of its carved slices; a failure is a ``LaunchError`` with the reason."""
        inventory = self._inventory()
        if not spec.mig_slices or inventory.gpu_source != "nvml":
            return spec
        from partitioner.catalog import model_for_nvml
        from workers.gpu.mig_apply import MigApplyError, ensure_instance

        gpus = {g.uuid: g for g in inventory.gpus}
        uuids = list(spec.gpu_uuids)
        for item in spec.mig_slices:
            gpu = gpus.get(item["gpu_uuid"])
            model = model_for_nvml(gpu.name, gpu.memory_mib, gpu.sm_count) if gpu else None
            profile = model.mig_profile(item["profile"]) if model else None
            if profile is None:
                raise LaunchError(f"{item['gpu_uuid']} has no MIG profile {item['profile']}")
            try:
                device = ensure_instance(item["gpu_uuid"], profile.profile_id, int(item["start"]))
            except MigApplyError as exc:
                raise LaunchError(f"cannot carve {item['profile']} at slice {item['start']}: {exc}") from exc
            uuids[int(item["index"])] = device.uuid
        threading.Thread(target=self._rereport, name="gpuq-agent-inventory", daemon=True).start()
        return replace(spec, gpu_uuids=uuids)

    def _rereport(self) -> None:
        """Re-probe NVML and re-register, so the service sees the new MIG devices and their UUIDs."""
        from workers.gpu.nvml import probe

        try:
            result = probe()
            self._report_gpus(list(result.gpus))
        except Exception:
            log.exception("re-reporting the inventory after MIG carving failed")

"""Apply a MIG layout to one idle GPU: destroy every instance, create the new ones.

Order (GPU-FACTS §1): refuse if any process runs on the GPU or its MIG
devices; destroy compute instances, then GPU instances; create each GPU
instance at its placement with one compute instance spanning it (what
``nvidia-smi mig -cgi … -C`` does); re-enumerate, since every handle is
invalid after a change.

Errors::

    MigApplyError
    ├── MigNotEnabled    the GPU is not in MIG mode (enabling it needs root and a reset)
    ├── GpuBusy          processes run on the GPU; nothing was changed
    ├── InvalidLayout    a profile or start the GPU does not have, or overlapping instances
    └── MigDriverError   NVML failed mid-way; the GPU may hold a partial layout

The whole layout is checked (profiles, starts, overlaps, max counts, compute
slices, idleness) before anything is destroyed. A failure after destruction
(the driver refusing a step) leaves the GPU with fewer instances than asked:
the caller re-probes and reports what is really there.
"""

from __future__ import annotations

from typing import Any

from workers.gpu.nvml import NvmlUnavailable, nvml_session, profile_table, read_mig_devices
from workers.messages import MigDeviceInfo

__all__ = [
    "GpuBusy", "InvalidLayout", "MigApplyError", "MigDriverError", "MigNotEnabled", "apply_layout", "ensure_instance",
]


class MigApplyError(Exception):
    """Base of MIG layout failures."""


class MigNotEnabled(MigApplyError):
    """The GPU is not in MIG mode."""


class GpuBusy(MigApplyError):
    """Processes run on the GPU; its layout was left as it was."""


class InvalidLayout(MigApplyError):
    """The layout names a profile or placement this GPU does not allow."""


class MigDriverError(MigApplyError):
    """NVML refused a step; the GPU may be left with a partial layout."""


def apply_layout(gpu_uuid: str, layout: list[tuple[int, int]], nvml: Any = None) -> list[MigDeviceInfo]:
    """Replace ``gpu_uuid``'s MIG instances by ``layout`` ([(profile_id, start)]); return the new devices."""
    try:
        with nvml_session(nvml) as nvml:
            return _apply(nvml, gpu_uuid, layout)
    except NvmlUnavailable as exc:
        raise MigDriverError(str(exc)) from None


def ensure_instance(gpu_uuid: str, profile_id: int, start: int, nvml: Any = None) -> MigDeviceInfo:
    """The MIG device of ``profile_id`` at memory slice ``start`` on ``gpu_uuid``, carved if missing.

    Instances elsewhere on the GPU keep running. An *idle* instance that
    overlaps the placement (left from an earlier layout) is destroyed first;
    a busy one raises ``GpuBusy``. Idempotent: an existing instance is returned.
    """
    try:
        with nvml_session(nvml) as nvml:
            return _ensure(nvml, gpu_uuid, profile_id, start)
    except NvmlUnavailable as exc:
        raise MigDriverError(str(exc)) from None


def _ensure(nvml: Any, gpu_uuid: str, profile_id: int, start: int) -> MigDeviceInfo:
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
        _check_enabled(nvml, handle, gpu_uuid)
        for device in read_mig_devices(nvml, handle):
            if device.start == start and device.profile_id == profile_id:
                return device
        info = profile_table(nvml, handle).get(profile_id)
        if info is None:
            raise InvalidLayout(f"{gpu_uuid} offers no MIG profile {profile_id}")
        placement = next((p for p in _possible_placements(nvml, handle, profile_id, int(info.instanceCount))
                          if int(p.start) == start), None)
        if placement is None:
            raise InvalidLayout(f"profile {profile_id} cannot start at memory slice {start} on {gpu_uuid}")
        wanted = set(range(start, start + int(placement.size)))
        busy_gis = _busy_gpu_instance_ids(nvml, handle)
        overlapping = []
        for gi in _gpu_instances(nvml, handle):
            gi_info = nvml.nvmlGpuInstanceGetInfo(gi)
            span = set(range(int(gi_info.placement.start), int(gi_info.placement.start) + int(gi_info.placement.size)))
            if span & wanted:
                if int(gi_info.id) in busy_gis:
                    raise GpuBusy(
                        f"{gpu_uuid}: a busy instance at slice {gi_info.placement.start} overlaps slice {start}")
                overlapping.append(gi)
    except nvml.NVMLError as exc:
        raise MigDriverError(f"reading {gpu_uuid}: {exc}") from None
    for gi in overlapping:  # idle leftovers of an earlier layout
        for ci in _compute_instances(nvml, gi):
            _step(nvml, lambda ci=ci: nvml.nvmlComputeInstanceDestroy(ci), "destroy compute instance", GpuBusy)
        _step(nvml, lambda gi=gi: nvml.nvmlGpuInstanceDestroy(gi), "destroy GPU instance", GpuBusy)
    gi = _step(nvml, lambda: nvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, profile_id, nvml.byref(placement)),
               f"create GPU instance profile {profile_id} at {start}", InvalidLayout)
    ci_profile = _full_compute_profile(nvml, gi)
    _step(nvml, lambda: nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile), "create compute instance",
          MigDriverError)
    try:
        fresh = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)  # handles are invalid after a change
        return next(d for d in read_mig_devices(nvml, fresh) if d.start == start and d.profile_id == profile_id)
    except (nvml.NVMLError, StopIteration) as exc:
        raise MigDriverError(f"re-reading {gpu_uuid} after carving: {exc}") from None


def _busy_gpu_instance_ids(nvml: Any, handle: Any) -> set[int]:
    """GPU instance ids whose MIG device runs a process."""
    busy = set()
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except nvml.NVMLError_NotFound:
            continue
        if nvml.nvmlDeviceGetComputeRunningProcesses(mig):
            busy.add(int(nvml.nvmlDeviceGetGpuInstanceId(mig)))
    return busy


def _apply(nvml: Any, gpu_uuid: str, layout: list[tuple[int, int]]) -> list[MigDeviceInfo]:
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
        _check_enabled(nvml, handle, gpu_uuid)
        placements = _check_layout(nvml, handle, layout)
        _check_idle(nvml, handle, gpu_uuid)
    except nvml.NVMLError as exc:
        raise MigDriverError(f"reading {gpu_uuid}: {exc}") from None
    # 1. destroy (compute instances first: a GI with CIs is IN_USE)
    for gi in _gpu_instances(nvml, handle):
        for ci in _compute_instances(nvml, gi):
            _step(nvml, lambda ci=ci: nvml.nvmlComputeInstanceDestroy(ci), "destroy compute instance", GpuBusy)
        _step(nvml, lambda gi=gi: nvml.nvmlGpuInstanceDestroy(gi), "destroy GPU instance", GpuBusy)
    # 2. create, each GI with one compute instance spanning it
    for (profile_id, start), placement in zip(layout, placements, strict=True):
        gi = _step(
            nvml,
            lambda p=profile_id, pl=placement: nvml.nvmlDeviceCreateGpuInstanceWithPlacement(handle, p, nvml.byref(pl)),
            f"create GPU instance profile {profile_id} at {start}",
            InvalidLayout,
        )
        ci_profile = _full_compute_profile(nvml, gi)
        _step(nvml, lambda gi=gi, ci_profile=ci_profile: nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile),
              "create compute instance", MigDriverError)
    # 3. re-enumerate: old handles are invalid now
    try:
        return read_mig_devices(nvml, nvml.nvmlDeviceGetHandleByUUID(gpu_uuid))
    except nvml.NVMLError as exc:
        raise MigDriverError(f"re-reading {gpu_uuid}: {exc}") from None


def _step(nvml: Any, call: Any, what: str, conflict: type[MigApplyError]) -> Any:
    """Run one NVML mutation; IN_USE / placement conflicts become ``conflict``."""
    try:
        return call()
    except (nvml.NVMLError_InUse, nvml.NVMLError_InsufficientResources, nvml.NVMLError_InvalidArgument) as exc:
        raise conflict(f"{what}: {exc}") from None
    except nvml.NVMLError as exc:
        raise MigDriverError(f"{what}: {exc}") from None


def _check_enabled(nvml: Any, handle: Any, gpu_uuid: str) -> None:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError_NotSupported:
        raise MigNotEnabled(f"{gpu_uuid} is not MIG-capable") from None
    if current != nvml.NVML_DEVICE_MIG_ENABLE:
        raise MigNotEnabled(f"{gpu_uuid} is not in MIG mode")


def _check_layout(nvml: Any, handle: Any, layout: list[tuple[int, int]]) -> list[Any]:
    """The NVML placement struct for each (profile_id, start); refuse unknown ones and overlaps."""
    profiles = profile_table(nvml, handle)
    # The biggest profile spans the whole GPU: its slice count is the GPU's compute slices.
    total_compute = max((int(i.sliceCount) for i in profiles.values()), default=0)
    placements: list[Any] = []
    used: set[int] = set()
    compute = 0
    counts: dict[int, int] = {}
    for profile_id, start in layout:
        info = profiles.get(profile_id)
        if info is None:
            raise InvalidLayout(f"profile {profile_id} is not a MIG profile of this GPU")
        counts[profile_id] = counts.get(profile_id, 0) + 1
        if counts[profile_id] > int(info.instanceCount):
            raise InvalidLayout(f"profile {profile_id} allows at most {info.instanceCount} instances")
        compute += int(info.sliceCount)
        if compute > total_compute:
            raise InvalidLayout(f"the layout needs more than the GPU's {total_compute} compute slices")
        possible = {p.start: p for p in _possible_placements(nvml, handle, profile_id, int(info.instanceCount))}
        if start not in possible:
            raise InvalidLayout(
                f"profile {profile_id} cannot start at memory slice {start} (allowed: {sorted(possible)})")
        span = set(range(start, start + int(possible[start].size)))
        if span & used:
            raise InvalidLayout(f"profile {profile_id} at {start} overlaps another instance of the layout")
        used |= span
        placement = nvml.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, int(possible[start].size)
        placements.append(placement)
    return placements


def _check_idle(nvml: Any, handle: Any, gpu_uuid: str) -> None:
    # On a MIG GPU the parent's list aggregates only for privileged callers,
    # so every MIG device is asked too.
    pids = {p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)}
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except nvml.NVMLError_NotFound:
            continue
        pids |= {p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(mig)}
    if pids:
        raise GpuBusy(f"{gpu_uuid} has running processes {sorted(pids)}; MIG layout left unchanged")


def _possible_placements(nvml: Any, handle: Any, profile_id: int, capacity: int) -> list[Any]:
    size = max(capacity, 8)  # at most 8 memory slices, so at most 8 starts
    array = (nvml.c_nvmlGpuInstancePlacement_t * size)()
    count = nvml.c_uint(size)
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, nvml.byref(count))
    return [array[i] for i in range(count.value)]


def _gpu_instances(nvml: Any, handle: Any) -> list[Any]:
    found = []
    for profile_id, info in profile_table(nvml, handle).items():
        array = (nvml.c_nvmlGpuInstance_t * max(1, int(info.instanceCount)))()
        count = nvml.c_uint(len(array))
        nvml.nvmlDeviceGetGpuInstances(handle, profile_id, array, nvml.byref(count))
        found += [array[i] for i in range(count.value)]
    return found


def _compute_profiles(nvml: Any, gi: Any) -> list[Any]:
    infos = []
    for const in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            infos.append(
                nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi, const, nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            )
        except nvml.NVMLError:
            continue  # not offered inside this GI
    return infos


def _compute_instances(nvml: Any, gi: Any) -> list[Any]:
    found = []
    for info in _compute_profiles(nvml, gi):
        array = (nvml.c_nvmlComputeInstance_t * max(1, int(info.instanceCount)))()
        count = nvml.c_uint(len(array))
        nvml.nvmlGpuInstanceGetComputeInstances(gi, int(info.id), array, nvml.byref(count))
        found += [array[i] for i in range(count.value)]
    return found


def _full_compute_profile(nvml: Any, gi: Any) -> int:
    """The compute-instance profile with the most slices offered in ``gi`` (the whole GI)."""
    infos = _compute_profiles(nvml, gi)
    if not infos:
        raise MigDriverError("the new GPU instance offers no compute instance profile")
    return int(max(infos, key=lambda i: int(i.sliceCount)).id)

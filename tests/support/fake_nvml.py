"""An in-memory twin of the ``pynvml`` subset gpuq uses (probe, sampler, MIG apply).

A :class:`FakeNvml` instance stands in for the ``pynvml`` module: same
function names and positional signatures, the real module's error classes
(``fake.NVMLError_NotFound is pynvml.NVMLError_NotFound``), constants and
ctypes types (any ``NVML*``/``c_*``/``byref`` name not defined here is read
from the real module), and return values with pynvml's attribute names.

Built from a spec of catalogue models (``partitioner.catalog``: real names,
memory, SM counts and MIG geometry)::

    fake = FakeNvml.from_spec("h100-80gb:2,a100-40gb:1", mig={0: [(9, 0), (14, 4)]})
    fake = FakeNvml.from_spec("", driver=False)   # nvmlInit raises NVMLError_LibraryNotFound

Faithful (behaviour as NVML documents it, errors as the real library raises):

* init/shutdown: ``nvmlInit`` (``LibraryNotFound`` without a driver),
  ``nvmlShutdown``; every other call before init raises ``Uninitialized``;
* devices: ``nvmlDeviceGetCount``, ``…GetHandleByIndex`` (``InvalidArgument``
  past the end), ``…GetHandleByUUID`` (GPU and MIG UUIDs, ``NotFound``),
  ``…GetUUID``, ``…GetName``, ``…GetPciInfo`` (``.busId``),
  ``…GetMemoryInfo`` (``.total/.free/.used`` in bytes), ``…GetAttributes``
  (``.multiprocessorCount``, ``.memorySizeMB``…; ``NotSupported`` before Ampere);
* utilization: ``…GetUtilizationRates`` (``.gpu/.memory``),
  ``…GetProcessUtilization(h, lastSeenTimeStamp)`` (samples ``.pid .timeStamp
  .smUtil .memUtil``; ``NotFound`` when none are newer), both ``NotSupported``
  on a MIG-enabled GPU and on MIG devices; ``…GetComputeRunningProcesses``
  (``.pid .usedGpuMemory`` bytes ``.gpuInstanceId .computeInstanceId``; per MIG
  device, or aggregated on the parent);
* MIG: ``…GetMigMode`` (``[current, pending]``; ``NotSupported`` on non-MIG
  models), ``…GetMaxMigDeviceCount``, ``…GetMigDeviceHandleByIndex``
  (``NotFound`` for empty slots), ``…GetGpuInstanceId``,
  ``…GetComputeInstanceId``, ``…GetDeviceHandleFromMigDeviceHandle``,
  ``…GetGpuInstanceProfileInfo(h, NVML_GPU_INSTANCE_PROFILE_*)`` (``.id
  .sliceCount .instanceCount .multiprocessorCount .memorySizeMB .name``),
  the ref-style ``…GetGpuInstancePossiblePlacements`` / ``…GetGpuInstances`` /
  ``nvmlGpuInstanceGetComputeInstances`` (they fill the caller's ctypes array
  and ``byref(c_uint)`` count), ``…GetGpuInstanceById``,
  ``nvmlGpuInstanceGetInfo`` (``.id .profileId .placement.start/.size``),
  ``…CreateGpuInstanceWithPlacement`` (``InvalidArgument`` for a start the
  profile does not allow, ``InsufficientResources`` for an overlap or past
  the profile's max count, ``NotSupported`` with MIG off),
  ``nvmlGpuInstanceGetComputeInstanceProfileInfo``,
  ``nvmlGpuInstanceCreateComputeInstance``, ``nvmlComputeInstanceDestroy``
  and ``nvmlGpuInstanceDestroy`` (``InUse`` while processes or, for a GI,
  compute instances remain); GI and CI handles are real ctypes pointers;
* NVLink: ``…GetNvLinkState`` / ``…GetNvLinkRemotePciInfo`` (``NotSupported``
  on GPUs built without NVLink, ``InvalidArgument`` past the link count).

Not faithful: GI/CI ids are allocated smallest-free (the driver's numbering
differs), MIG memory/SM figures are the catalogue's (exact only for H100-80GB),
MIG device indices are dense, timestamps are the wall clock (strictly increasing), nothing about
clocks, power, ECC, vGPU, events or MIG mode changes is modelled.
"""

from __future__ import annotations

import ctypes
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

from partitioner.catalog import GpuModel, MigProfile, lookup_model

__all__ = ["FakeCi", "FakeGi", "FakeGpu", "FakeNvml", "FakeProcess"]

MIB = 1024 * 1024
_NVLINK_LINKS = 18  # links per H100 / A100 (12) — enough for any fake topology
_PRE_AMPERE = ("t4", "v100-16gb", "v100-32gb", "p100", "g2", "g3")
# NVML_COMPUTE_INSTANCE_PROFILE_* constants by compute slice count.
_CI_CONST_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}
_UUID_NS = uuidlib.UUID("6f1c2a53-3d3e-4c1e-9a51-6770713e0001")


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeProcess:
    """One process on a GPU or MIG device."""

    pid: int
    used_mib: int
    sm_percent: int | None = None
    mem_percent: int = 0


@dataclass
class FakeCi:
    """A compute instance; with its GI it is one MIG device."""

    id: int
    profile_const: int
    slices: int
    uuid: str
    handle: Any
    processes: list[FakeProcess] = field(default_factory=list)


@dataclass
class FakeGi:
    """A GPU instance at a placement."""

    id: int
    profile: MigProfile
    start: int
    handle: Any
    cis: dict[int, FakeCi] = field(default_factory=dict)


@dataclass
class FakeGpu:
    """One physical GPU of the fake host."""

    index: int
    uuid: str
    model: GpuModel
    pci_bus_id: str
    mig_enabled: bool = False
    nvlink_peers: list[int] = field(default_factory=list)
    nvlink: bool = False
    processes: list[FakeProcess] = field(default_factory=list)
    gis: dict[int, FakeGi] = field(default_factory=dict)

    def mig_devices(self) -> list[tuple[FakeGi, FakeCi]]:
        return [(gi, gi.cis[c]) for g in sorted(self.gis) for gi in [self.gis[g]] for c in sorted(gi.cis)]


@dataclass(frozen=True, eq=False)
class _Dev:
    """A device handle: a whole GPU, or one MIG device of it."""

    gpu: FakeGpu
    gi: FakeGi | None = None
    ci: FakeCi | None = None

    def __repr__(self) -> str:
        return f"<fake nvmlDevice {self.ci.uuid if self.ci else self.gpu.uuid}>"


class FakeNvml:
    """Stands in for the ``pynvml`` module (see the module docstring for what is faithful)."""

    def __init__(self, gpus: list[FakeGpu], *, driver: bool = True) -> None:
        self.gpus = gpus
        self.driver = driver
        self.initialized = 0  # NVML counts init/shutdown pairs
        self.calls: list[str] = []
        self._clock_us = 1_000_000
        self._handles: dict[int, tuple[str, Any]] = {}  # ctypes address -> ("gi"|"ci", object)
        self._keep: list[Any] = []  # keeps the structs behind GI/CI pointers alive
        self._next_uuid = 0

    # -- building ---------------------------------------------------------

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        mig: dict[int, list[tuple[int, int]]] | None = None,
        nvlink: bool = False,
        driver: bool = True,
        seed: str = "fake",
    ) -> FakeNvml:
        """GPUs from ``"model:count,…"``; ``mig`` maps GPU index -> [(profile_id, start)] (MIG on).

        ``nvlink``: every pair of GPUs of the same model is NVLink-connected.
        """
        gpus: list[FakeGpu] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, _, count = part.partition(":")
            model = lookup_model(key)
            if model is None:
                raise ValueError(f"unknown GPU model {key!r}")
            for _ in range(int(count or 1)):
                i = len(gpus)
                gpus.append(
                    FakeGpu(
                        index=i,
                        uuid=f"GPU-{uuidlib.uuid5(_UUID_NS, f'{seed}-{i}')}",
                        model=model,
                        pci_bus_id=f"00000000:{0x17 + i * 0x10:02X}:00.0",
                        nvlink=nvlink and model.key not in ("t4", "l4", "a10", "l40s"),
                    )
                )
        if nvlink:
            for g in gpus:
                g.nvlink_peers = [p.index for p in gpus if p is not g and p.model.key == g.model.key and g.nvlink]
        fake = cls(gpus, driver=driver)
        for index, layout in (mig or {}).items():
            gpu = gpus[index]
            if not gpu.model.mig_capable:
                raise ValueError(f"GPU {index} ({gpu.model.key}) is not MIG-capable")
            gpu.mig_enabled = True
            for profile_id, start in layout:
                gi = fake._create_gi(gpu, profile_id, start)
                fake._create_ci(gi, _full_ci_const(gi.profile.compute_slices))
        return fake

    def add_process(self, uuid: str, pid: int, used_mib: int, sm_percent: int | None = None) -> None:
        """Put a process on the GPU or MIG device ``uuid`` (sm_percent feeds process utilization)."""
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                gpu.processes.append(FakeProcess(pid, used_mib, sm_percent))
                return
            for _gi, ci in gpu.mig_devices():
                if ci.uuid == uuid:
                    ci.processes.append(FakeProcess(pid, used_mib, sm_percent))
                    return
        raise KeyError(uuid)

    def gpu(self, uuid: str) -> FakeGpu:
        """The fake GPU with ``uuid``."""
        return next(g for g in self.gpus if g.uuid == uuid)

    def __getattr__(self, name: str) -> Any:
        # Constants, error classes and ctypes helpers are the real module's.
        if name.startswith(("NVML", "c_", "struct_")) or name in ("byref", "pointer", "POINTER"):
            return getattr(pynvml, name)
        raise AttributeError(name)

    # -- internals --------------------------------------------------------

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if not self.initialized:
            raise _err(pynvml.NVML_ERROR_UNINITIALIZED)

    def _uuid(self, prefix: str) -> str:
        self._next_uuid += 1
        return f"{prefix}-{uuidlib.uuid5(_UUID_NS, f'mig-{self._next_uuid}')}"

    def _pointer(self, kind: str, obj: Any, struct: type) -> Any:
        target = struct()
        self._keep.append(target)
        self._handles[ctypes.addressof(target)] = (kind, obj)
        return ctypes.pointer(target)

    def _deref(self, handle: Any, kind: str) -> Any:
        try:
            found = self._handles.get(ctypes.addressof(handle.contents))
        except (AttributeError, TypeError, ValueError):
            found = None
        if found is None or found[0] != kind:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return found[1]

    @staticmethod
    def _dev(handle: Any) -> _Dev:
        if not isinstance(handle, _Dev):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle

    def _whole(self, handle: Any) -> FakeGpu:
        dev = self._dev(handle)
        if dev.gi is not None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return dev.gpu

    def _profile(self, gpu: FakeGpu, profile_id: int) -> MigProfile:
        profile = gpu.model.mig_profile_by_id(profile_id)
        if profile is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return profile

    def _gi_span(self, gi: FakeGi) -> range:
        return range(gi.start, gi.start + gi.profile.memory_slices)

    def _create_gi(self, gpu: FakeGpu, profile_id: int, start: int) -> FakeGi:
        profile = self._profile(gpu, profile_id)
        if start not in profile.starts:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        span = set(range(start, start + profile.memory_slices))
        used_compute = sum(g.profile.compute_slices for g in gpu.gis.values())
        same = sum(1 for g in gpu.gis.values() if g.profile.profile_id == profile_id)
        if (
            any(span & set(self._gi_span(g)) for g in gpu.gis.values())
            or same >= profile.max_count
            or used_compute + profile.compute_slices > gpu.model.compute_slices
        ):
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        gi_id = next(i for i in range(1, 64) if i not in gpu.gis)
        gi = FakeGi(id=gi_id, profile=profile, start=start, handle=None)
        gi.handle = self._pointer("gi", (gpu, gi), pynvml.struct_c_nvmlGpuInstance_t)
        gpu.gis[gi_id] = gi
        return gi

    def _create_ci(self, gi: FakeGi, const: int) -> FakeCi:
        slices = _CI_CONST_SLICES.get(const)
        if slices is None or slices > gi.profile.compute_slices:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if sum(c.slices for c in gi.cis.values()) + slices > gi.profile.compute_slices:
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        ci_id = next(i for i in range(64) if i not in gi.cis)
        ci = FakeCi(id=ci_id, profile_const=const, slices=slices, uuid=self._uuid("MIG"), handle=None)
        ci.handle = self._pointer("ci", (gi, ci), pynvml.struct_c_nvmlComputeInstance_t)
        gi.cis[ci_id] = ci
        return ci

    def _all_processes(self, dev: _Dev) -> list[tuple[FakeProcess, int, int]]:
        if dev.gi is not None and dev.ci is not None:  # a MIG device handle has both
            return [(p, dev.gi.id, dev.ci.id) for p in dev.ci.processes]
        out = [(p, 0xFFFFFFFF, 0xFFFFFFFF) for p in dev.gpu.processes]
        for gi, ci in dev.gpu.mig_devices():
            out += [(p, gi.id, ci.id) for p in ci.processes]
        return out

    # -- init -------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if not self.driver:
            raise _err(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.initialized -= 1

    # -- devices ----------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Dev:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Dev(self.gpus[index])

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Dev:
        self._check("nvmlDeviceGetHandleByUUID")
        wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == wanted:
                return _Dev(gpu)
            for gi, ci in gpu.mig_devices():
                if ci.uuid == wanted:
                    return _Dev(gpu, gi, ci)
        raise _err(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._check("nvmlDeviceGetUUID")
        dev = self._dev(handle)
        return dev.ci.uuid if dev.ci is not None else dev.gpu.uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._check("nvmlDeviceGetName")
        dev = self._dev(handle)
        name = dev.gpu.model.display_name
        return f"{name} MIG {dev.gi.profile.name}" if dev.gi is not None else name

    def nvmlDeviceGetPciInfo(self, handle: Any) -> SimpleNamespace:
        self._check("nvmlDeviceGetPciInfo")
        gpu = self._dev(handle).gpu
        return SimpleNamespace(busId=gpu.pci_bus_id, busIdLegacy=gpu.pci_bus_id)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> SimpleNamespace:
        self._check("nvmlDeviceGetMemoryInfo")
        dev = self._dev(handle)
        total_mib = dev.gi.profile.memory_mib if dev.gi is not None else dev.gpu.model.memory_mib
        used = sum(p.used_mib for p, _, _ in self._all_processes(dev)) * MIB
        return SimpleNamespace(total=total_mib * MIB, used=used, free=total_mib * MIB - used)

    def nvmlDeviceGetAttributes(self, handle: Any) -> SimpleNamespace:
        self._check("nvmlDeviceGetAttributes")
        dev = self._dev(handle)
        if dev.gpu.model.key in _PRE_AMPERE:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if dev.gi is not None and dev.ci is not None:  # a MIG device handle has both
            p = dev.gi.profile
            return SimpleNamespace(
                multiprocessorCount=p.sm_count,
                gpuInstanceSliceCount=p.compute_slices,
                computeInstanceSliceCount=dev.ci.slices,
                memorySizeMB=p.memory_mib,
            )
        m = dev.gpu.model
        return SimpleNamespace(
            multiprocessorCount=m.sm_count,
            gpuInstanceSliceCount=m.compute_slices,
            computeInstanceSliceCount=m.compute_slices,
            memorySizeMB=m.memory_mib,
        )

    # -- utilization and processes ------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> SimpleNamespace:
        self._check("nvmlDeviceGetUtilizationRates")
        dev = self._dev(handle)
        if dev.gi is not None or dev.gpu.mig_enabled:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        sm = min(100, sum(p.sm_percent or 0 for p in dev.gpu.processes))
        return SimpleNamespace(gpu=sm, memory=min(100, sum(p.mem_percent for p in dev.gpu.processes)))

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[SimpleNamespace]:
        self._check("nvmlDeviceGetProcessUtilization")
        dev = self._dev(handle)
        if dev.gi is not None or dev.gpu.mig_enabled:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        # NVML stamps samples with the CPU clock in µs since the epoch (what the sampler's since_us is)
        self._clock_us = max(self._clock_us + 1, int(time.time() * 1e6))
        samples = [
            SimpleNamespace(pid=p.pid, timeStamp=self._clock_us, smUtil=p.sm_percent, memUtil=p.mem_percent,
                            encUtil=0, decUtil=0)
            for p in dev.gpu.processes
            if p.sm_percent is not None
        ]
        samples = [s for s in samples if s.timeStamp > timeStamp]
        if not samples:
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        return samples

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[SimpleNamespace]:
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_mib * MIB, gpuInstanceId=gi, computeInstanceId=ci)
            for p, gi, ci in self._all_processes(self._dev(handle))
        ]

    # -- MIG: devices -----------------------------------------------------

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        self._check("nvmlDeviceGetMigMode")
        gpu = self._whole(device)
        if not gpu.model.mig_capable:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig_enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        self._check("nvmlDeviceGetMaxMigDeviceCount")
        gpu = self._whole(device)
        if not gpu.model.mig_capable:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.model.compute_slices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> _Dev:
        self._check("nvmlDeviceGetMigDeviceHandleByIndex")
        gpu = self._whole(device)
        if not gpu.model.mig_capable or not 0 <= index < gpu.model.compute_slices:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        devices = gpu.mig_devices() if gpu.mig_enabled else []
        if index >= len(devices):
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        gi, ci = devices[index]
        return _Dev(gpu, gi, ci)

    def nvmlDeviceIsMigDeviceHandle(self, device: Any) -> int:
        self._check("nvmlDeviceIsMigDeviceHandle")
        return int(self._dev(device).gi is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> _Dev:
        self._check("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        dev = self._dev(migDevice)
        if dev.gi is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Dev(dev.gpu)

    def nvmlDeviceGetGpuInstanceId(self, device: Any) -> int:
        self._check("nvmlDeviceGetGpuInstanceId")
        dev = self._dev(device)
        if dev.gi is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return dev.gi.id

    def nvmlDeviceGetComputeInstanceId(self, device: Any) -> int:
        self._check("nvmlDeviceGetComputeInstanceId")
        dev = self._dev(device)
        if dev.ci is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return dev.ci.id

    # -- MIG: GPU instances -----------------------------------------------

    def nvmlDeviceGetGpuInstanceProfileInfo(self, device: Any, profile: int, version: int = 2) -> SimpleNamespace:
        self._check("nvmlDeviceGetGpuInstanceProfileInfo")
        gpu = self._whole(device)
        if not gpu.model.mig_capable:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        for p in gpu.model.mig_profiles:
            if getattr(pynvml, p.nvml_const) == profile:
                return SimpleNamespace(
                    id=p.profile_id,
                    isP2pSupported=0,
                    sliceCount=p.compute_slices,
                    instanceCount=p.max_count,
                    multiprocessorCount=p.sm_count,
                    memorySizeMB=p.memory_mib,
                    name=f"MIG {p.name}",
                )
        raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, device: Any, profileId: int, placementsRef: Any, countRef: Any
    ) -> int:
        self._check("nvmlDeviceGetGpuInstancePossiblePlacements")
        gpu = self._whole(device)
        profile = self._profile(gpu, profileId)
        count = _unref(countRef)
        if placementsRef is None:  # size query, as in C
            count.value = len(profile.starts)
            return pynvml.NVML_SUCCESS
        if len(placementsRef) < len(profile.starts):
            count.value = len(profile.starts)
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, start in enumerate(profile.starts):
            placementsRef[i].start = start
            placementsRef[i].size = profile.memory_slices
        count.value = len(profile.starts)
        return pynvml.NVML_SUCCESS

    def nvmlDeviceCreateGpuInstanceWithPlacement(self, device: Any, profileId: int, placement: Any) -> Any:
        self._check("nvmlDeviceCreateGpuInstanceWithPlacement")
        gpu = self._whole(device)
        if not gpu.mig_enabled:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        placement = _unref(placement)
        profile = self._profile(gpu, profileId)
        if placement.size != profile.memory_slices:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._create_gi(gpu, profileId, placement.start).handle

    def nvmlDeviceGetGpuInstances(self, device: Any, profileId: int, gpuInstancesRef: Any, countRef: Any) -> int:
        self._check("nvmlDeviceGetGpuInstances")
        gpu = self._whole(device)
        if not gpu.mig_enabled:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self._profile(gpu, profileId)
        found = [gi for gi in gpu.gis.values() if gi.profile.profile_id == profileId]
        if len(gpuInstancesRef) < len(found):
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, gi in enumerate(found):
            gpuInstancesRef[i] = gi.handle
        _unref(countRef).value = len(found)
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetGpuInstanceById(self, device: Any, gpuInstanceId: int) -> Any:
        self._check("nvmlDeviceGetGpuInstanceById")
        gpu = self._whole(device)
        gi = gpu.gis.get(gpuInstanceId)
        if gi is None:
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        return gi.handle

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> SimpleNamespace:
        self._check("nvmlGpuInstanceGetInfo")
        gpu, gi = self._deref(gpuInstance, "gi")
        return SimpleNamespace(
            device=_Dev(gpu),
            id=gi.id,
            profileId=gi.profile.profile_id,
            placement=SimpleNamespace(start=gi.start, size=gi.profile.memory_slices),
        )

    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> int:
        self._check("nvmlGpuInstanceDestroy")
        gpu, gi = self._deref(gpuInstance, "gi")
        if gi.cis:
            raise _err(pynvml.NVML_ERROR_IN_USE)
        del gpu.gis[gi.id]
        return pynvml.NVML_SUCCESS

    # -- MIG: compute instances -------------------------------------------

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, device: Any, profile: int, engProfile: int, version: int = 2
    ) -> SimpleNamespace:
        self._check("nvmlGpuInstanceGetComputeInstanceProfileInfo")
        _gpu, gi = self._deref(device, "gi")
        slices = _CI_CONST_SLICES.get(profile)
        shared = engProfile == pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        if slices is None or slices > gi.profile.compute_slices or not shared:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        sms = gi.profile.sm_count * slices // gi.profile.compute_slices
        return SimpleNamespace(id=profile, sliceCount=slices, instanceCount=gi.profile.compute_slices // slices,
                               multiprocessorCount=sms)

    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int) -> Any:
        self._check("nvmlGpuInstanceCreateComputeInstance")
        _gpu, gi = self._deref(gpuInstance, "gi")
        return self._create_ci(gi, profileId).handle

    def nvmlGpuInstanceGetComputeInstances(
        self, gpuInstance: Any, profileId: int, computeInstancesRef: Any, countRef: Any
    ) -> int:
        self._check("nvmlGpuInstanceGetComputeInstances")
        _gpu, gi = self._deref(gpuInstance, "gi")
        found = [ci for ci in gi.cis.values() if ci.profile_const == profileId]
        if len(computeInstancesRef) < len(found):
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, ci in enumerate(found):
            computeInstancesRef[i] = ci.handle
        _unref(countRef).value = len(found)
        return pynvml.NVML_SUCCESS

    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> int:
        self._check("nvmlComputeInstanceDestroy")
        gi, ci = self._deref(computeInstance, "ci")
        if ci.processes:
            raise _err(pynvml.NVML_ERROR_IN_USE)
        del gi.cis[ci.id]
        return pynvml.NVML_SUCCESS

    # -- NVLink -----------------------------------------------------------

    def nvmlDeviceGetNvLinkState(self, device: Any, link: int) -> int:
        self._check("nvmlDeviceGetNvLinkState")
        gpu = self._whole(device)
        if not gpu.nvlink:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= link < _NVLINK_LINKS:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(link < len(gpu.nvlink_peers))

    def nvmlDeviceGetNvLinkRemotePciInfo(self, device: Any, link: int) -> SimpleNamespace:
        self._check("nvmlDeviceGetNvLinkRemotePciInfo")
        gpu = self._whole(device)
        if not gpu.nvlink:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= link < len(gpu.nvlink_peers):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        peer = self.gpus[gpu.nvlink_peers[link]]
        return SimpleNamespace(busId=peer.pci_bus_id, busIdLegacy=peer.pci_bus_id)


def _unref(ref: Any) -> Any:
    """The object behind ``ctypes.byref(x)`` (or ``x`` itself when passed directly)."""
    return getattr(ref, "_obj", ref)


def _full_ci_const(compute_slices: int) -> int:
    """The NVML_COMPUTE_INSTANCE_PROFILE_* constant spanning a whole GI of ``compute_slices``."""
    return next(c for c, s in _CI_CONST_SLICES.items() if s == compute_slices)

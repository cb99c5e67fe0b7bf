"""Probe a host's GPUs through NVML into plain ``GpuInfo`` values; sample per-process use.

NVML is reached through an injectable module: the real ``pynvml`` (package
``nvidia-ml-py``, imported lazily so hosts without it still start) or a
:class:`tests.support.fake_nvml.FakeNvml` in tests. Every entry point pairs
``nvmlInit`` with ``nvmlShutdown`` (NVML counts them) and never raises for
"no GPU here": no library, no driver or a failing init give an empty result
with a human reason.

Best effort, per GPU: SM count (``nvmlDeviceGetAttributes``, Ampere+; else
the catalogue's figure for the model), MIG mode and devices, NVLink peers,
PCI bus id. A call a GPU does not support leaves that field at its default.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workers.messages import GpuInfo, MigDeviceInfo

__all__ = [
    "NvmlUnavailable",
    "ProbeResult",
    "ProcessSample",
    "load_nvml",
    "nvml_session",
    "probe",
    "profile_table",
    "read_mig_devices",
    "sample_utilization",
]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found: the GPUs, where from ("nvml" or "none"), and why none."""

    gpus: list[GpuInfo]
    source: str
    note: str = ""


@dataclass(frozen=True)
class ProcessSample:
    """One process's use of one GPU or MIG device at one moment."""

    gpu_uuid: str
    pid: int
    sm_percent: float | None  # None where NVML cannot say (MIG, no sample yet)
    memory_used_mib: int
    timestamp_us: int


class NvmlUnavailable(Exception):
    """NVML could not be loaded or initialised; the message is for humans."""


def load_nvml(nvml: Any = None) -> Any:
    """``nvml`` itself, or the real ``pynvml`` module (``NvmlUnavailable`` if not installed)."""
    if nvml is not None:
        return nvml
    try:
        import pynvml
    except ImportError as exc:  # the dependency is declared, but an agent must still start
        raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc})") from None
    return pynvml


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _init(nvml: Any) -> None:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError_LibraryNotFound:
        raise NvmlUnavailable(
            "NVIDIA driver library (libnvidia-ml.so.1) not found: no NVIDIA driver on this host") from None
    except nvml.NVMLError_DriverNotLoaded:
        raise NvmlUnavailable("NVIDIA kernel driver not loaded") from None
    except nvml.NVMLError_NoPermission:
        raise NvmlUnavailable("no permission to open the NVIDIA devices") from None
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML init failed: {exc}") from None
    except OSError as exc:  # a broken libnvidia-ml can fail in the loader itself
        raise NvmlUnavailable(f"NVML could not be loaded: {exc}") from None


def _shutdown(nvml: Any) -> None:
    with contextlib.suppress(nvml.NVMLError):  # nothing useful to do about a failing shutdown
        nvml.nvmlShutdown()


@contextlib.contextmanager
def nvml_session(nvml: Any = None) -> Iterator[Any]:
    """``nvmlInit`` … ``nvmlShutdown`` around a block; yields the module. Raises ``NvmlUnavailable``."""
    nvml = load_nvml(nvml)
    _init(nvml)
    try:
        yield nvml
    finally:
        _shutdown(nvml)


def probe(nvml: Any = None) -> ProbeResult:
    """Every GPU NVML sees, with MIG devices; ``source="none"`` and a reason when there are none."""
    try:
        nvml = load_nvml(nvml)
        _init(nvml)
    except NvmlUnavailable as exc:
        return ProbeResult([], "none", str(exc))
    try:
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        bus_ids = [_pci_bus_id(nvml, h) for h in handles]
        gpus = [_gpu_info(nvml, i, h, bus_ids) for i, h in enumerate(handles)]
    except nvml.NVMLError as exc:
        return ProbeResult([], "none", f"NVML failed while listing GPUs: {exc}")
    finally:
        _shutdown(nvml)
    return ProbeResult(gpus, "nvml", "" if gpus else "NVML reports no GPUs")


def _gpu_info(nvml: Any, index: int, handle: Any, bus_ids: list[str | None]) -> GpuInfo:
    name = _text(nvml.nvmlDeviceGetName(handle))
    memory_mib = int(nvml.nvmlDeviceGetMemoryInfo(handle).total // MIB)
    mig_enabled = _mig_enabled(nvml, handle)
    return GpuInfo(
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        index=index,
        name=name,
        model=name,  # the service maps NVML names onto catalogue keys
        memory_mib=memory_mib,
        sm_count=_sm_count(nvml, handle, name, memory_mib),
        mig_enabled=mig_enabled,
        mig_devices=read_mig_devices(nvml, handle) if mig_enabled else [],
        nvlink_peers=_nvlink_peers(nvml, handle, bus_ids),
        pci_bus_id=bus_ids[index],
    )


def _sm_count(nvml: Any, handle: Any, name: str, memory_mib: int) -> int:
    try:
        return int(nvml.nvmlDeviceGetAttributes(handle).multiprocessorCount)
    except nvml.NVMLError:
        pass  # pre-Ampere GPUs do not support device attributes
    from partitioner.catalog import lookup_model

    model = lookup_model(name)
    return model.sm_count if model is not None else 0


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:  # NotSupported: not a MIG-capable GPU
        return False
    return current == nvml.NVML_DEVICE_MIG_ENABLE


def _pci_bus_id(nvml: Any, handle: Any) -> str | None:
    try:
        return _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
    except nvml.NVMLError:
        return None


def _nvlink_peers(nvml: Any, handle: Any, bus_ids: list[str | None]) -> list[int]:
    peers: set[int] = set()
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            if not nvml.nvmlDeviceGetNvLinkState(handle, link):
                continue
            remote = _text(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
        except nvml.NVMLError_NotSupported:
            break  # no NVLink on this GPU
        except nvml.NVMLError_InvalidArgument:
            break  # past the GPU's last link
        except nvml.NVMLError:
            continue
        # An NVSwitch or a CPU can sit at the other end; only GPUs of this host count.
        peers.update(i for i, bus in enumerate(bus_ids) if bus is not None and bus.lower() == remote.lower())
    return sorted(peers)


def profile_table(nvml: Any, handle: Any) -> dict[int, Any]:
    """GI profile id (smi ID) -> NVML's profile info, for the profiles this GPU supports."""
    table = {}
    for const in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, const)
        except nvml.NVMLError:
            continue  # NotSupported / InvalidArgument: not a profile of this GPU
        table[int(info.id)] = info
    return table


def _profile_name(info: Any) -> str:
    # NVML names profiles "MIG 3g.40gb"; gpuq speaks the short form.
    name = _text(getattr(info, "name", "")).strip()
    return name[4:] if name.upper().startswith("MIG ") else name


def read_mig_devices(nvml: Any, handle: Any) -> list[MigDeviceInfo]:
    """The MIG devices (GI + CI) of the GPU ``handle``, in NVML's index order (NVML initialised)."""
    profiles = profile_table(nvml, handle)
    devices = []
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
        except nvml.NVMLError_NotFound:
            continue  # an empty slot
        gi = nvml.nvmlDeviceGetGpuInstanceById(handle, nvml.nvmlDeviceGetGpuInstanceId(mig))
        gi_info = nvml.nvmlGpuInstanceGetInfo(gi)
        profile = profiles.get(int(gi_info.profileId))
        try:
            attrs = nvml.nvmlDeviceGetAttributes(mig)
            sm_count = int(attrs.multiprocessorCount)
        except nvml.NVMLError:
            sm_count = int(profile.multiprocessorCount) if profile is not None else 0
        devices.append(
            MigDeviceInfo(
                uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                profile=_profile_name(profile) if profile is not None else f"profile-{gi_info.profileId}",
                profile_id=int(gi_info.profileId),
                start=int(gi_info.placement.start),
                size=int(gi_info.placement.size),
                memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(mig).total // MIB),
                sm_count=sm_count,
            )
        )
    return devices


def sample_utilization(
    nvml: Any = None, gpu_uuids: list[str] | None = None, *, since_us: int = 0
) -> list[ProcessSample]:
    """Per-process SM % and memory on the given GPU / MIG UUIDs (all GPUs when None).

    Memory comes from the running-process list (works on MIG devices); SM %
    from process utilization samples newer than ``since_us`` (whole GPUs
    only: MIG devices and MIG-enabled GPUs report None). No NVML: [].
    """
    try:
        nvml = load_nvml(nvml)
        _init(nvml)
    except NvmlUnavailable:
        return []
    try:
        if gpu_uuids is None:
            gpu_uuids = [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
                         for i in range(nvml.nvmlDeviceGetCount())]
        samples: list[ProcessSample] = []
        for uuid in gpu_uuids:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
            except nvml.NVMLError:
                continue  # gone (MIG layout changed) — nothing to sample
            samples += _sample_device(nvml, uuid, handle, since_us)
        return samples
    finally:
        _shutdown(nvml)


def _sample_device(nvml: Any, uuid: str, handle: Any, since_us: int) -> list[ProcessSample]:
    sm_by_pid: dict[int, tuple[float, int]] = {}
    try:
        for s in nvml.nvmlDeviceGetProcessUtilization(handle, since_us):
            sm_by_pid[int(s.pid)] = (float(s.smUtil), int(s.timeStamp))
    except nvml.NVMLError:
        pass  # NotSupported (MIG) or NotFound (no sample newer than since_us)
    try:
        processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError:
        processes = []
    now_us = int(time.time() * 1e6)
    out = []
    for p in processes:
        sm, ts = sm_by_pid.get(int(p.pid), (None, now_us))
        used = p.usedGpuMemory  # None where the driver cannot tell (e.g. WDDM)
        out.append(ProcessSample(uuid, int(p.pid), sm, int(used // MIB) if used else 0, ts))
    return out

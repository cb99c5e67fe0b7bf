"""The fake NVML answers like pynvml: error classes, NotSupported paths, ref-style calls."""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from tests.support.fake_nvml import FakeNvml


@pytest.fixture
def fake():
    f = FakeNvml.from_spec("h100-80gb:1,t4:1", mig={0: [(9, 0)]})
    f.nvmlInit()
    yield f
    f.nvmlShutdown()


def test_errors_are_pynvmls_own(fake):
    assert fake.NVMLError_NotFound is pynvml.NVMLError_NotFound
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetHandleByUUID("GPU-nope")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(9)


def test_calls_before_init_raise_uninitialized():
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        FakeNvml.from_spec("t4:1").nvmlDeviceGetCount()


def test_no_driver():
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        FakeNvml.from_spec("t4:1", driver=False).nvmlInit()


def test_not_supported_paths(fake):
    h100 = fake.nvmlDeviceGetHandleByIndex(0)
    t4 = fake.nvmlDeviceGetHandleByIndex(1)
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(h100, 0)
    for call in (
        lambda: fake.nvmlDeviceGetUtilizationRates(h100),  # MIG-enabled GPU
        lambda: fake.nvmlDeviceGetProcessUtilization(mig, 0),  # MIG device
        lambda: fake.nvmlDeviceGetMigMode(t4),  # not MIG-capable
        lambda: fake.nvmlDeviceGetAttributes(t4),  # pre-Ampere
        lambda: fake.nvmlDeviceGetNvLinkState(t4, 0),  # no NVLink
    ):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call()
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(h100, 1)  # an empty slot
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetProcessUtilization(t4, 0)  # no samples


def test_memory_in_bytes_and_mig_handles(fake):
    h100 = fake.nvmlDeviceGetHandleByIndex(0)
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(h100, 0)
    fake.add_process(fake.nvmlDeviceGetUUID(mig), 5, 1000)
    mem = fake.nvmlDeviceGetMemoryInfo(mig)
    assert mem.total == 40448 * 2**20 and mem.used == 1000 * 2**20 and mem.free == mem.total - mem.used
    (proc,) = fake.nvmlDeviceGetComputeRunningProcesses(h100)  # the parent aggregates
    assert proc.pid == 5 and proc.usedGpuMemory == 1000 * 2**20
    assert fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)) == fake.gpus[0].uuid


def test_ref_style_calls_fill_ctypes_arrays(fake):
    h100 = fake.nvmlDeviceGetHandleByIndex(0)
    info = fake.nvmlDeviceGetGpuInstanceProfileInfo(h100, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
    got = (info.id, info.sliceCount, info.instanceCount, info.multiprocessorCount, info.memorySizeMB)
    assert got == (9, 3, 2, 60, 40448)
    placements = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint(8)
    fake.nvmlDeviceGetGpuInstancePossiblePlacements(h100, 9, placements, ctypes.byref(count))
    assert [(placements[i].start, placements[i].size) for i in range(count.value)] == [(0, 4), (4, 4)]
    gis = (pynvml.c_nvmlGpuInstance_t * 2)()
    fake.nvmlDeviceGetGpuInstances(h100, 9, gis, ctypes.byref(count))
    assert count.value == 1 and fake.nvmlGpuInstanceGetInfo(gis[0]).placement.start == 0


def test_placement_rules(fake):
    h100 = fake.nvmlDeviceGetHandleByIndex(0)

    def create(profile_id, start, size):
        placement = pynvml.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, size
        return fake.nvmlDeviceCreateGpuInstanceWithPlacement(h100, profile_id, ctypes.byref(placement))

    with pytest.raises(pynvml.NVMLError_InsufficientResources):
        create(14, 2, 2)  # overlaps the 3g at 0..3
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        create(9, 2, 4)  # 3g may start at 0 or 4 only
    gi = create(9, 4, 4)
    assert fake.nvmlGpuInstanceGetInfo(gi).id == 2


def test_destroy_in_use(fake):
    h100 = fake.nvmlDeviceGetHandleByIndex(0)
    gi = fake.nvmlDeviceGetGpuInstanceById(h100, 1)
    with pytest.raises(pynvml.NVMLError_InUse):
        fake.nvmlGpuInstanceDestroy(gi)  # its compute instance still exists
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(h100, 0)
    fake.add_process(fake.nvmlDeviceGetUUID(mig), 9, 10)
    cis = (pynvml.c_nvmlComputeInstance_t * 1)()
    count = ctypes.c_uint(1)
    fake.nvmlGpuInstanceGetComputeInstances(gi, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, cis, ctypes.byref(count))
    with pytest.raises(pynvml.NVMLError_InUse):
        fake.nvmlComputeInstanceDestroy(cis[0])  # a process runs there


def test_unknown_model_refused():
    with pytest.raises(ValueError, match="unknown GPU model"):
        FakeNvml.from_spec("rtx-9999:1")
    with pytest.raises(ValueError, match="not MIG-capable"):
        FakeNvml.from_spec("t4:1", mig={0: []})

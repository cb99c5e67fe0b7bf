"""NVML probe and sampler on the fake NVML (and on the real pynvml where no driver exists)."""

from __future__ import annotations

import pynvml
import pytest

from tests.support.fake_nvml import FakeNvml
from workers.gpu.nvml import ProbeResult, probe, sample_utilization


def test_whole_gpus():
    fake = FakeNvml.from_spec("h100-80gb:2,a100-40gb:1")
    result = probe(fake)
    assert result.source == "nvml" and result.note == ""
    assert [g.name for g in result.gpus] == ["NVIDIA H100 80GB HBM3"] * 2 + ["NVIDIA A100-SXM4-40GB"]
    assert [g.model for g in result.gpus] == [g.name for g in result.gpus]  # the service maps names to keys
    assert [g.index for g in result.gpus] == [0, 1, 2]
    h100 = result.gpus[0]
    assert h100.uuid.startswith("GPU-") and h100.memory_mib == 81559 and h100.sm_count == 132
    assert h100.mig_enabled is False and h100.mig_devices == []
    assert h100.pci_bus_id and len({g.pci_bus_id for g in result.gpus}) == 3
    assert len({g.uuid for g in result.gpus}) == 3
    assert fake.initialized == 0  # init and shutdown paired


def test_mig_enabled_gpu_with_instances():
    fake = FakeNvml.from_spec("h100-80gb:1,a100-40gb:1", mig={0: [(9, 0), (14, 4), (19, 6)], 1: []})
    h100, a100 = probe(fake).gpus
    assert h100.mig_enabled and a100.mig_enabled and a100.mig_devices == []
    got = [(m.profile, m.profile_id, m.start, m.size, m.memory_mib, m.sm_count) for m in h100.mig_devices]
    assert got == [
        ("3g.40gb", 9, 0, 4, 40448, 60),
        ("2g.20gb", 14, 4, 2, 20070, 32),
        ("1g.10gb", 19, 6, 1, 9984, 16),
    ]
    assert all(m.uuid.startswith("MIG-") for m in h100.mig_devices)


def test_pre_ampere_gpu_falls_back_to_catalogue_sms_and_no_mig():
    (t4,) = probe(FakeNvml.from_spec("t4:1")).gpus
    assert t4.sm_count == 40 and t4.mig_enabled is False and t4.nvlink_peers == []


def test_nvlink_peers_best_effort():
    gpus = probe(FakeNvml.from_spec("h100-80gb:3,l4:1", nvlink=True)).gpus
    assert [g.nvlink_peers for g in gpus] == [[1, 2], [0, 2], [0, 1], []]


def test_no_driver_is_a_clean_none():
    fake = FakeNvml.from_spec("h100-80gb:1", driver=False)
    result = probe(fake)
    assert result == ProbeResult([], "none", result.note)
    assert "no NVIDIA driver" in result.note


@pytest.mark.parametrize(
    "code, words",
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "permission"),
        (pynvml.NVML_ERROR_UNKNOWN, "init failed"),
    ],
)
def test_init_failures_are_clean(code, words):
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise pynvml.NVMLError(code)

    result = probe(Broken([]))
    assert result.source == "none" and result.gpus == [] and words in result.note


def test_real_pynvml_without_driver_is_clean():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVIDIA driver is present")
    result = probe()
    assert result.source == "none" and result.gpus == [] and result.note


def test_failure_while_listing_is_clean_and_shuts_down():
    class Flaky(FakeNvml):
        def nvmlDeviceGetName(self, handle):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    fake = Flaky(FakeNvml.from_spec("h100-80gb:1").gpus)
    result = probe(fake)
    assert result.source == "none" and "GPU is lost" in result.note
    assert fake.initialized == 0


def test_sampler_whole_gpu_and_mig():
    fake = FakeNvml.from_spec("h100-80gb:2", mig={1: [(9, 0)]})
    whole, mig_gpu = probe(fake).gpus
    mig = mig_gpu.mig_devices[0].uuid
    fake.add_process(whole.uuid, 100, 2048, sm_percent=40)
    fake.add_process(whole.uuid, 101, 512)  # no utilization sample yet
    fake.add_process(mig, 200, 4096, sm_percent=90)  # MIG: NVML gives no SM %

    samples = {(s.gpu_uuid, s.pid): s for s in sample_utilization(fake, [whole.uuid, mig])}
    assert samples[(whole.uuid, 100)].sm_percent == 40.0
    assert samples[(whole.uuid, 100)].memory_used_mib == 2048
    assert samples[(whole.uuid, 101)].sm_percent is None
    assert samples[(mig, 200)].sm_percent is None and samples[(mig, 200)].memory_used_mib == 4096
    assert all(s.timestamp_us > 0 for s in samples.values())
    assert fake.initialized == 0


def test_sampler_all_gpus_and_unknown_uuid():
    fake = FakeNvml.from_spec("a100-80gb:2")
    fake.add_process(fake.gpus[1].uuid, 7, 100, sm_percent=5)
    assert [(s.pid, s.sm_percent) for s in sample_utilization(fake)] == [(7, 5.0)]
    assert sample_utilization(fake, ["GPU-gone"]) == []


def test_sampler_without_driver_is_empty():
    assert sample_utilization(FakeNvml.from_spec("h100-80gb:1", driver=False)) == []

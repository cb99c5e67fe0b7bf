"""apply_layout on the fake NVML."""

from __future__ import annotations

import pytest

from tests.support.fake_nvml import FakeNvml
from workers.gpu.mig_apply import GpuBusy, InvalidLayout, MigDriverError, MigNotEnabled, apply_layout
from workers.gpu.nvml import probe


def layout_of(fake, index=0):
    return [(m.profile_id, m.start) for m in probe(fake).gpus[index].mig_devices]


def test_success_replaces_and_reenumerates():
    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: [(9, 0), (14, 4), (19, 6)]})
    uuid = fake.gpus[0].uuid
    old = {m.uuid for m in probe(fake).gpus[0].mig_devices}
    devices = apply_layout(uuid, [(5, 0), (9, 4)], nvml=fake)
    assert [(d.profile, d.start, d.size, d.sm_count) for d in devices] == [("4g.40gb", 0, 4, 64), ("3g.40gb", 4, 4, 60)]
    assert not old & {d.uuid for d in devices}  # new devices, new UUIDs
    assert layout_of(fake) == [(5, 0), (9, 4)]
    assert fake.initialized == 0


def test_empty_layout_clears_and_full_gpu():
    fake = FakeNvml.from_spec("a100-40gb:1", mig={0: [(19, 0), (19, 1)]})
    uuid = fake.gpus[0].uuid
    assert apply_layout(uuid, [], nvml=fake) == []
    (full,) = apply_layout(uuid, [(0, 0)], nvml=fake)
    assert (full.profile, full.size) == ("7g.40gb", 8)


def test_busy_gpu_refused_and_unchanged():
    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: [(9, 0), (9, 4)]})
    fake.add_process(probe(fake).gpus[0].mig_devices[1].uuid, 4242, 100)
    with pytest.raises(GpuBusy, match="4242"):
        apply_layout(fake.gpus[0].uuid, [(0, 0)], nvml=fake)
    assert layout_of(fake) == [(9, 0), (9, 4)]


@pytest.mark.parametrize(
    "layout, message",
    [
        ([(9, 0), (14, 2)], "overlaps"),
        ([(9, 2)], "cannot start"),
        ([(20, 0), (20, 1)], "at most 1"),
        ([(5, 0), (14, 4), (14, 6)], "compute slices"),
        ([(42, 0)], "not a MIG profile"),
    ],
)
def test_invalid_layouts_refused_before_anything_changes(layout, message):
    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: [(0, 0)]})
    with pytest.raises(InvalidLayout, match=message):
        apply_layout(fake.gpus[0].uuid, layout, nvml=fake)
    assert layout_of(fake) == [(0, 0)]
    assert not any(c.startswith(("nvmlGpuInstanceDestroy", "nvmlComputeInstanceDestroy")) for c in fake.calls)


def test_mig_disabled_or_incapable():
    fake = FakeNvml.from_spec("h100-80gb:1,t4:1")
    with pytest.raises(MigNotEnabled, match="not in MIG mode"):
        apply_layout(fake.gpus[0].uuid, [(0, 0)], nvml=fake)
    with pytest.raises(MigNotEnabled, match="not MIG-capable"):
        apply_layout(fake.gpus[1].uuid, [(0, 0)], nvml=fake)


def test_unknown_gpu_and_no_driver():
    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: []})
    with pytest.raises(MigDriverError, match="Not Found"):
        apply_layout("GPU-unknown", [(0, 0)], nvml=fake)
    with pytest.raises(MigDriverError, match="driver"):
        apply_layout("GPU-x", [], nvml=FakeNvml.from_spec("h100-80gb:1", driver=False))


def test_a30_geometry():
    fake = FakeNvml.from_spec("a30:1", mig={0: []})
    devices = apply_layout(fake.gpus[0].uuid, [(14, 0), (14, 1), (5, 2)], nvml=fake)
    assert [(d.profile, d.start) for d in devices] == [("1g.6gb", 0), ("1g.6gb", 1), ("2g.12gb", 2)]


def test_ensure_instance_carves_beside_running_instances():
    from workers.gpu.mig_apply import ensure_instance

    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: [(9, 0)]})
    running = probe(fake).gpus[0].mig_devices[0]
    fake.add_process(running.uuid, 4242, 100)
    made = ensure_instance(fake.gpus[0].uuid, 9, 4, nvml=fake)
    assert (made.profile, made.start) == ("3g.40gb", 4)
    assert layout_of(fake) == [(9, 0), (9, 4)] and probe(fake).gpus[0].mig_devices[0].uuid == running.uuid
    again = ensure_instance(fake.gpus[0].uuid, 9, 4, nvml=fake)
    assert again.uuid == made.uuid, "idempotent: the existing instance is returned"
    assert fake.initialized == 0


def test_ensure_instance_replaces_idle_overlaps_and_refuses_busy_ones():
    from workers.gpu.mig_apply import ensure_instance

    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: [(19, 4), (19, 5), (14, 0)]})
    devices = probe(fake).gpus[0].mig_devices
    busy = next(d for d in devices if d.start == 0)
    fake.add_process(busy.uuid, 7, 100)
    made = ensure_instance(fake.gpus[0].uuid, 9, 4, nvml=fake)  # the idle 1g slices at 4 and 5 make way
    assert sorted(layout_of(fake)) == [(9, 4), (14, 0)] and made.start == 4
    with pytest.raises(GpuBusy, match="overlaps"):
        ensure_instance(fake.gpus[0].uuid, 9, 0, nvml=fake)
    with pytest.raises(InvalidLayout, match="cannot start"):
        ensure_instance(fake.gpus[0].uuid, 9, 2, nvml=fake)

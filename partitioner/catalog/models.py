"""The GPU catalogue: model sizes and MIG profile tables (GPU-FACTS.md §1).

The MIG table is written once as the rows of GPU-FACTS.md §1 (one row per
profile ID, one name column per model family) and expanded per model below.

Figures and where they come from:

* Placement geometry (IDs, NVML constants, slices, max counts, starts): §1, [C]/[S]
  for A100 and H100, assumed identical for H100 NVL, H200 and B200 [U].
* ``memory_mib`` of a profile: exact for H100-80GB (1g 9.75 GiB, 2g 19.6 GiB,
  3g/4g 39.5 GiB, 7g 79.25 GiB, §1 [S]); for the other models the H100 ratio
  (share of the full 7g instance per memory slice) applied to the model's
  memory, rounded down to 1 MiB — an estimate; NVML reports the truth.
* ``sm_count`` of a profile: exact for H100-80GB (16/32/60/64/132, §1 [S]);
  A100 as real A100s report (14 per slice, 98 for 7g) [S]; for the others the H100 share of the whole
  GPU's SMs (16/132 per slice, 60/132 for 3g, …) applied to the model's SM count, rounded down — an estimate.
* A30: 1g.6gb ×4 (starts 0–3), 2g.12gb ×2 (0, 2), 4g.24gb ×1 (0); names [C],
  starts [U], smi IDs 14/5/0 as on real A30s [U].
* openb's ``G2`` and ``G3`` are undisclosed models; they get plausible
  16 GiB / 32 GiB non-MIG figures (the replay ignores GPU memory anyway).
"""

from __future__ import annotations

from partitioner.catalog import GpuModel, MigProfile

# --- MIG table of GPU-FACTS.md §1 -------------------------------------------
# (smi id, NVML constant suffix, compute slices, memory slices, max, starts)
_GEOMETRY_7x8: tuple[tuple[int, str, int, int, int, tuple[int, ...]], ...] = (
    (19, "1_SLICE", 1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    (20, "1_SLICE_REV1", 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    (15, "1_SLICE_REV2", 1, 2, 4, (0, 2, 4, 6)),
    (14, "2_SLICE", 2, 2, 3, (0, 2, 4)),
    (9, "3_SLICE", 3, 4, 2, (0, 4)),
    (5, "4_SLICE", 4, 4, 1, (0,)),
    (0, "7_SLICE", 7, 8, 1, (0,)),
)

# Profile names per model family, in the row order of _GEOMETRY_7x8.
_NAMES_7x8: dict[str, tuple[str, ...]] = {
    "a100-40gb": ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "a100-80gb": ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "h100-80gb": ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "h100-nvl": ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "h200": ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "b200": ("1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
}

# H100-80GB instance sizes (§1 [S]) by memory slices, and SMs by compute slices.
_H100_MEMORY_MIB = {1: 9984, 2: 20070, 4: 40448, 8: 81152}
_H100_FULL_MIB = 81559  # what NVML reports for the whole H100 80GB HBM3
_H100_SMS = {1: 16, 2: 32, 3: 60, 4: 64, 7: 132}
# A100 MIG SM counts as real A100s report them (14 SMs per compute slice, 98 for 7g) [S].
_A100_SMS = {1: 14, 2: 28, 3: 42, 4: 56, 7: 98}


def _profiles_7x8(key: str, memory_mib: int, sm_count: int) -> tuple[MigProfile, ...]:
    profiles = []
    for (pid, const, cs, ms, max_count, starts), name in zip(_GEOMETRY_7x8, _NAMES_7x8[key], strict=True):
        if key == "h100-80gb":
            mem, sms = _H100_MEMORY_MIB[ms], _H100_SMS[cs]
        else:
            mem = _H100_MEMORY_MIB[ms] * memory_mib // _H100_FULL_MIB
            sms = _A100_SMS[cs] if key.startswith("a100") else _H100_SMS[cs] * sm_count // 132
        profiles.append(
            MigProfile(
                name=name,
                profile_id=pid,
                nvml_const=f"NVML_GPU_INSTANCE_PROFILE_{const}",
                compute_slices=cs,
                memory_slices=ms,
                max_count=max_count,
                starts=starts,
                memory_mib=mem,
                sm_count=sms,
            )
        )
    return tuple(profiles)


def _mig_model(key: str, display_name: str, memory_mib: int, sm_count: int) -> GpuModel:
    return GpuModel(
        key=key,
        display_name=display_name,
        memory_mib=memory_mib,
        sm_count=sm_count,
        mig_profiles=_profiles_7x8(key, memory_mib, sm_count),
        compute_slices=7,
        memory_slices=8,
    )


_A30 = GpuModel(
    key="a30",
    display_name="NVIDIA A30",
    memory_mib=24576,
    sm_count=56,
    mig_profiles=(
        MigProfile("1g.6gb", 14, "NVML_GPU_INSTANCE_PROFILE_1_SLICE", 1, 1, 4, (0, 1, 2, 3), 5836, 14),
        MigProfile("2g.12gb", 5, "NVML_GPU_INSTANCE_PROFILE_2_SLICE", 2, 2, 2, (0, 2), 11968, 28),
        MigProfile("4g.24gb", 0, "NVML_GPU_INSTANCE_PROFILE_4_SLICE", 4, 4, 1, (0,), 24062, 56),
    ),
    compute_slices=4,
    memory_slices=4,
)

MODELS: tuple[GpuModel, ...] = (
    _mig_model("a100-40gb", "NVIDIA A100-SXM4-40GB", 40960, 108),
    _mig_model("a100-80gb", "NVIDIA A100-SXM4-80GB", 81920, 108),
    _A30,
    _mig_model("h100-80gb", "NVIDIA H100 80GB HBM3", 81559, 132),
    _mig_model("h100-nvl", "NVIDIA H100 NVL", 95830, 132),
    _mig_model("h200", "NVIDIA H200", 143771, 132),
    _mig_model("b200", "NVIDIA B200", 183359, 148),
    GpuModel("t4", "Tesla T4", 15360, 40),
    GpuModel("l4", "NVIDIA L4", 23034, 58),
    GpuModel("a10", "NVIDIA A10", 23028, 72),
    GpuModel("l40s", "NVIDIA L40S", 46068, 142),
    GpuModel("v100-16gb", "Tesla V100-SXM2-16GB", 16384, 80),
    GpuModel("v100-32gb", "Tesla V100-SXM2-32GB", 32768, 80),
    GpuModel("p100", "Tesla P100-PCIE-16GB", 16384, 56),
    GpuModel("g2", "openb G2 (undisclosed)", 16384, 80),
    GpuModel("g3", "openb G3 (undisclosed)", 32768, 80),
)

# Other spellings (NVML device names, the openb trace's model column) -> key.
ALIASES: dict[str, str] = {
    "NVIDIA A100-PCIE-40GB": "a100-40gb",
    "NVIDIA A100-SXM4-40GB": "a100-40gb",
    "A100": "a100-40gb",
    "NVIDIA A100 80GB PCIe": "a100-80gb",
    "NVIDIA A100-SXM4-80GB": "a100-80gb",
    "NVIDIA H100 PCIe": "h100-80gb",
    "NVIDIA H100 80GB HBM3": "h100-80gb",
    "H100": "h100-80gb",
    "NVIDIA H100 NVL": "h100-nvl",
    "NVIDIA H200": "h200",
    "NVIDIA H200 NVL": "h200",
    "NVIDIA B200": "b200",
    "Tesla V100-SXM2-16GB": "v100-16gb",
    "Tesla V100-PCIE-16GB": "v100-16gb",
    "Tesla V100-SXM2-32GB": "v100-32gb",
    "Tesla V100-PCIE-32GB": "v100-32gb",
    "V100": "v100-16gb",
    "V100M16": "v100-16gb",
    "V100M32": "v100-32gb",
    "Tesla P100-PCIE-16GB": "p100",
    "Tesla P100-SXM2-16GB": "p100",
    "Tesla P100-PCIE-12GB": "p100",
    "Tesla T4": "t4",
    "NVIDIA T4": "t4",
    "NVIDIA L4": "l4",
    "NVIDIA A10": "a10",
    "NVIDIA L40S": "l40s",
    "NVIDIA A30": "a30",
}

"""GPU models and their MIG profile tables, as plain data.

Invariants:

* every key in the catalogue is lower case and unique; NVML device names and
  trace aliases map onto keys through :data:`ALIASES`;
* a model's ``mig_profiles`` is empty exactly when the model is not MIG-capable;
* MIG profiles are identified by ``profile_id`` (the ``nvidia-smi`` ID), never by
  name, because names clash across models (``1g.10gb`` is the 2-memory-slice
  profile 15 on A100-40GB but the 1-slice profile 19 on 80 GB parts). Names are
  only resolved *per model*.

The tables follow /work/shared/GPU-FACTS.md §1. Memory and SM figures of MIG
profiles are exact for H100-80GB (from real ``nvidia-smi`` output); elsewhere
they are proportional estimates (documented in :mod:`partitioner.catalog.models`).
On a real GPU, NVML's figures win.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "MODELS",
    "GpuModel",
    "MigProfile",
    "all_mig_profile_names",
    "find_mig_profile",
    "lookup_model",
    "model_for_nvml",
    "slugify",
]


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One MIG GPU-instance profile of one GPU model."""

    name: str  # e.g. "3g.40gb"; unique only within one model
    profile_id: int  # nvidia-smi ID (19, 20, 15, 14, 9, 5, 0 on A100/H100)
    nvml_const: str  # e.g. "NVML_GPU_INSTANCE_PROFILE_3_SLICE"
    compute_slices: int
    memory_slices: int  # the instance's size in memory slices
    max_count: int  # at most this many instances of the profile per GPU
    starts: tuple[int, ...]  # allowed first memory slices
    memory_mib: int
    sm_count: int


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One GPU model: its size and, when MIG-capable, its MIG geometry."""

    key: str  # catalogue key, e.g. "h100-80gb"
    display_name: str
    memory_mib: int
    sm_count: int
    mig_profiles: tuple[MigProfile, ...] = ()
    compute_slices: int = 0  # 7 on A100/H100/H200/B200, 4 on A30, 0 if not MIG-capable
    memory_slices: int = 0  # 8 on A100/H100/H200/B200, 4 on A30

    @property
    def mig_capable(self) -> bool:
        """True when the model can be put in MIG mode."""
        return bool(self.mig_profiles)

    def mig_profile(self, name: str) -> MigProfile | None:
        """The profile called ``name`` on this model (case-insensitive), or None."""
        wanted = name.strip().lower()
        for profile in self.mig_profiles:
            if profile.name == wanted:
                return profile
        return None

    def mig_profile_by_id(self, profile_id: int) -> MigProfile | None:
        """The profile with smi ID ``profile_id`` on this model, or None."""
        for profile in self.mig_profiles:
            if profile.profile_id == profile_id:
                return profile
        return None


def slugify(name: str) -> str:
    """Lower-case ``name`` and squeeze every run of non-alphanumerics into ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")


from partitioner.catalog.models import ALIASES, MODELS  # noqa: E402  (data needs the classes)

_BY_SLUG: dict[str, GpuModel] = {}
for _model in MODELS:
    _BY_SLUG[slugify(_model.key)] = _model
    _BY_SLUG[slugify(_model.display_name)] = _model
for _alias, _key in ALIASES.items():
    _BY_SLUG[slugify(_alias)] = next(m for m in MODELS if m.key == _key)
_MODELS_BY_KEY: dict[str, GpuModel] = {m.key: m for m in MODELS}


def _heuristic(slug: str) -> GpuModel | None:
    # NVML spells the same part in several ways ("NVIDIA A100-SXM4-40GB",
    # "NVIDIA A100 80GB PCIe", "Tesla V100-PCIE-32GB"); match family + size.
    tokens = set(slug.split("-"))
    def has(*words: str) -> bool:
        return all(w in tokens for w in words)
    rules: list[tuple[bool, str]] = [
        (has("b200"), "b200"),
        (has("h200"), "h200"),
        (has("h100") and has("nvl"), "h100-nvl"),
        (has("h100"), "h100-80gb"),
        (has("a100") and ("80gb" in tokens), "a100-80gb"),
        (has("a100"), "a100-40gb"),
        (has("a30"), "a30"),
        (has("l40s"), "l40s"),
        (has("l4"), "l4"),
        (has("a10"), "a10"),
        (has("t4"), "t4"),
        (has("v100") and ("32gb" in tokens), "v100-32gb"),
        (has("v100"), "v100-16gb"),
        (has("p100"), "p100"),
    ]
    for matched, key in rules:
        if matched:
            return _MODELS_BY_KEY[key]
    return None


@functools.lru_cache(maxsize=4096)  # called per GPU per encode: names repeat, the catalogue never changes
def lookup_model(name: str) -> GpuModel | None:
    """The catalogue model for a key, alias or NVML device name (case-insensitive), or None."""
    slug = slugify(name)
    if not slug:
        return None
    found = _BY_SLUG.get(slug)
    if found is not None:
        return found
    return _heuristic(slug)


def model_for_nvml(name: str, memory_mib: int, sm_count: int) -> GpuModel:
    """The catalogue model NVML's ``name`` denotes; unknown devices get a non-MIG model.

    The synthesized model is keyed on :func:`slugify` of the name and carries what
    NVML reported, so GPUs the catalogue has never heard of still schedule as
    whole GPUs or shared blocks.
    """
    found = lookup_model(name)
    if found is not None:
        return found
    key = slugify(name) or "unknown-gpu"
    return GpuModel(key=key, display_name=name.strip() or key, memory_mib=int(memory_mib), sm_count=int(sm_count))


def find_mig_profile(model_key: str, profile_name: str) -> MigProfile | None:
    """The MIG profile ``profile_name`` as model ``model_key`` defines it, or None."""
    model = lookup_model(model_key)
    if model is None:
        return None
    return model.mig_profile(profile_name)


_ALL_PROFILE_NAMES = frozenset(p.name for m in MODELS for p in m.mig_profiles)


def all_mig_profile_names() -> frozenset[str]:
    """Every MIG profile name of every catalogue model (for "unknown MIG profile" checks)."""
    return _ALL_PROFILE_NAMES

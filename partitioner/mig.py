"""MIG placement geometry: layouts, free slots and validation.

A MIG GPU instance occupies the memory slices ``start .. start + size - 1``
(size = the profile's ``memory_slices``). A layout is valid when every
instance's profile exists on the model, its start is one of the profile's
allowed starts, no profile is used more than ``max_count`` times, and the
memory ranges are pairwise disjoint (GPU-FACTS.md §1). Compute slices never
exceed the model's total in a valid layout, because every allowed placement
of the real geometry respects it; we check it anyway.

Occupancy is a bitmask of memory slices (bit ``i`` set = slice ``i`` taken):
a profile fits at ``start`` when ``mask & span(start, size) == 0``. The
bitmask form is what :mod:`partitioner.kernels` uses too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from partitioner.catalog import GpuModel, MigProfile, lookup_model

__all__ = [
    "best_start",
    "count_new_instances",
    "free_starts",
    "layout_mask",
    "shared_profiles",
    "span_mask",
    "validate_layout",
]


def span_mask(start: int, size: int) -> int:
    """Bitmask of the memory slices ``start .. start + size - 1``."""
    return ((1 << size) - 1) << start


def layout_mask(model: GpuModel, layout: Iterable[tuple[str, int]]) -> int:
    """Occupied memory-slice mask of a layout (unknown profiles are skipped)."""
    mask = 0
    for name, start in layout:
        profile = model.mig_profile(name)
        if profile is not None:
            mask |= span_mask(start, profile.memory_slices)
    return mask


def free_starts(profile: MigProfile, mask: int) -> list[int]:
    """Allowed starts of ``profile`` whose memory slices are all free in ``mask``."""
    return [s for s in profile.starts if mask & span_mask(s, profile.memory_slices) == 0]


def count_new_instances(profile: MigProfile, mask: int, existing: int = 0) -> int:
    """How many more instances of ``profile`` fit in ``mask`` (greedy, lowest start first).

    Greedy is optimal here: every profile's starts are aligned to its size,
    so taking the lowest free start never blocks two later ones.
    ``existing`` instances of the profile already count against ``max_count``.
    """
    count = 0
    room = profile.max_count - existing
    for start in profile.starts:
        if count >= room:
            break
        span = span_mask(start, profile.memory_slices)
        if mask & span == 0:
            mask |= span
            count += 1
    return count


def validate_layout(model_key: str, layout: Sequence[tuple[str, int]]) -> list[str]:
    """Reasons the MIG ``layout`` ((profile, start) pairs) is invalid on ``model_key``; empty if valid."""
    model = lookup_model(model_key)
    if model is None:
        return [f"unknown GPU model {model_key!r}"]
    if not model.mig_capable:
        return [f"{model.key} is not MIG-capable"]
    reasons: list[str] = []
    counts: dict[int, int] = {}
    owners: dict[int, str] = {}  # memory slice -> "profile@start" holding it
    compute = 0
    for name, start in layout:
        profile = model.mig_profile(name)
        if profile is None:
            reasons.append(f"unknown MIG profile {name!r} on {model.key}")
            continue
        label = f"{profile.name}@{start}"
        if start not in profile.starts:
            allowed = ", ".join(map(str, profile.starts))
            reasons.append(f"{label}: bad start slot {start} (allowed: {allowed})")
            continue
        counts[profile.profile_id] = counts.get(profile.profile_id, 0) + 1
        if counts[profile.profile_id] == profile.max_count + 1:
            reasons.append(f"too many {profile.name}: at most {profile.max_count} per GPU")
        compute += profile.compute_slices
        clashes: dict[str, list[int]] = {}
        for s in range(start, start + profile.memory_slices):
            if s in owners:
                clashes.setdefault(owners[s], []).append(s)
            else:
                owners[s] = label
        for other, slices in clashes.items():
            reasons.append(f"{label} overlaps {other}: overlapping memory slices {slices[0]}-{slices[-1]}")
    if compute > model.compute_slices and not reasons:
        reasons.append(f"uses {compute} compute slices; {model.key} has {model.compute_slices}")
    return reasons


# -- where a new instance goes ---------------------------------------------------------------------
#
# A GPU's MIG state is its occupied memory-slice mask and the instance count per profile (in
# ``model.mig_profiles`` order; counts matter for ``max_count``, e.g. the one ``+me`` profile).
# Its *future* is the family of multisets of profiles that could still be added (in some
# arrangement). Putting a new instance at the lowest free start can shrink that family more than
# another start would: on 7x8 parts a 1g at slice 0 kills the 4g (start 0 only) that a 1g at
# slice 6 leaves. ``best_start`` takes, among the free valid starts, the one whose future contains
# the lowest start's future and is the largest (ties: the lower start), so it never gives up a
# combination the lowest start would have kept. Families are bitsets over the multisets that fit
# the empty GPU, computed once per model; :func:`partitioner.reference.best_start` is the
# frozenset twin.

_MigState = tuple[int, tuple[int, ...]]


class _Futures:
    """Per model: every state's future as a bitset over the multisets that fit the empty GPU."""

    def __init__(self, model: GpuModel) -> None:
        self.profiles = model.mig_profiles
        self._bit: dict[tuple[int, ...], int] = {(): 0}
        self._memo: dict[_MigState, int] = {}

    def family(self, mask: int, counts: tuple[int, ...]) -> int:
        key = (mask, counts)
        found = self._memo.get(key)
        if found is not None:
            return found
        family = 1 << self._bit[()]
        for i, p in enumerate(self.profiles):
            if counts[i] >= p.max_count:
                continue
            after = (*counts[:i], counts[i] + 1, *counts[i + 1:])
            for s in p.starts:
                span = span_mask(s, p.memory_slices)
                if mask & span:
                    continue
                sub = self.family(mask | span, after)
                family |= self._shift_in(sub, i)
        self._memo[key] = family
        return family

    def _shift_in(self, family: int, i: int) -> int:
        """The family with profile ``i`` added to each of its multisets."""
        out = 0
        for multiset, bit in list(self._bit.items()):
            if family >> bit & 1:
                grown = tuple(sorted((*multiset, i)))
                out |= 1 << self._index(grown)
        return out

    def _index(self, multiset: tuple[int, ...]) -> int:
        bit = self._bit.get(multiset)
        if bit is None:
            bit = self._bit[multiset] = len(self._bit)
        return bit


_FUTURES: dict[str, _Futures] = {}


def best_start(model: GpuModel, profile: MigProfile, mask: int, counts: Sequence[int]) -> int | None:
    """Where a new ``profile`` instance keeps the most future placements (None: no free valid start).

    ``counts``: instances per profile of ``model.mig_profiles`` already on the GPU.
    """
    free = free_starts(profile, mask)
    if not free or counts[model.mig_profiles.index(profile)] >= profile.max_count:
        return None
    if len(free) == 1:
        return free[0]
    futures = _FUTURES.get(model.key)
    if futures is None:
        futures = _FUTURES[model.key] = _Futures(model)
    i = model.mig_profiles.index(profile)
    after = (*counts[:i], counts[i] + 1, *counts[i + 1:])
    base = futures.family(mask | span_mask(free[0], profile.memory_slices), after)
    best, best_size = free[0], base.bit_count()
    for s in free[1:]:
        family = futures.family(mask | span_mask(s, profile.memory_slices), after)
        if family & base == base and family.bit_count() > best_size:
            best, best_size = s, family.bit_count()
    return best


# -- shared instances --------------------------------------------------------------------------------


def shared_profiles(model: GpuModel, memory_mib: int) -> list[MigProfile]:
    """Profiles a shared instance for a blocks request of ``memory_mib`` may be carved as, best first.

    The smallest footprint that holds the memory (fewest memory slices), then the most compute
    for that footprint (2g.20gb before 1g.20gb: same memory, twice the SMs), then the NVML id.
    Media-extension profiles (``+me``, one per GPU) are left for the jobs that ask for them.
    """
    fits = [p for p in model.mig_profiles if p.memory_mib >= memory_mib and "+me" not in p.name]
    return sorted(fits, key=lambda p: (p.memory_slices, -p.compute_slices, p.profile_id))

"""Whole-GPU equivalents: the one unit of quotas, fair share, preemption, billing and metrics.

One rule, for whatever holds (or will hold) part of a GPU:

* a whole GPU is 1, whatever its model;
* a MIG instance is its profile's compute slices over the compute slices of
  its model's full GPU, read from the catalogue (``3g.40gb`` on an A100 or
  H100 is 3/7; ``2g.12gb`` on an A30, which has 4 slices, is 2/4);
* blocks are 1 % of the device they are on: ``blocks / 100`` of a GPU, or of
  a shared MIG instance's share of its GPU;
* CPU-only is 0.

Two forms of the same rule, so every caller counts alike:

* :func:`held_equivalents` — an allocation row or a ledger interval, whose
  GPU model is known (``services.quotas``, ``snapshots``, ``billing.ledger``,
  ``billing.reports``, ``metrics``);
* :func:`request_equivalents` — a queued job (``admission.snapshot``: quota
  checks in the cycle, borrowed-capacity reclaim in preemption), whose GPU
  is not chosen yet. A MIG profile counts at the smallest share among the
  allowed models that define that profile name (every catalogue model when
  the job allows any): a job is never refused for quota on a share no
  allowed GPU would give it. Profile names are only meaningful per model —
  ``1g.10gb`` is profile 15 (2 memory slices) on A100-40GB but profile 19
  (1 memory slice) on 80 GB parts (GPU-FACTS §1) — so the share is read per
  model; that clash is about memory, both are 1 of 7 compute slices, and
  today no name means different compute shares on different models, so
  the request's count equals the allocation's once placed. Blocks whose
  device is not chosen yet count ``blocks / 100`` (a shared whole GPU: the
  most they can be).

Why here: this is domain arithmetic over the partitioner's catalogue, with
no database or web imports, and ``admission`` is the pure layer every
other caller (services, billing, metrics) already imports; the partitioner
itself places slices and has no notion of quota units.
"""

from __future__ import annotations

import functools

from partitioner.catalog import MODELS, lookup_model
from partitioner.types import BLOCKS_PER_GPU, Request, SliceKind

__all__ = ["held_equivalents", "mig_share", "request_equivalents"]

WHOLE_GPU = 1.0


@functools.lru_cache(maxsize=1024)  # (model, profile) pairs are few; called per row per scrape/report
def mig_share(mig_profile: str, gpu_model: str | None = None) -> float:
    """Compute slices of ``mig_profile`` over those of ``gpu_model``'s full GPU (3g on a 7-slice GPU: 3/7).

    With no model, or one the catalogue does not know or that lacks the
    profile, the share is the smallest among catalogue models that define
    the profile name; a name no model defines counts as a whole GPU (an
    instance is never more than its GPU).
    """
    model = lookup_model(gpu_model) if gpu_model else None
    profile = model.mig_profile(mig_profile) if model is not None else None
    if model is not None and profile is not None and model.compute_slices:
        return profile.compute_slices / model.compute_slices
    return _smallest_share(mig_profile, ())


@functools.lru_cache(maxsize=1024)
def _smallest_share(mig_profile: str, gpu_models: tuple[str, ...]) -> float:
    """The smallest share of ``mig_profile`` over the allowed models (all catalogue models if none)."""
    allowed = [m for m in (lookup_model(name) for name in gpu_models) if m is not None] or list(MODELS)
    profiles = [(m, m.mig_profile(mig_profile)) for m in allowed if m.compute_slices]
    shares = [p.compute_slices / m.compute_slices for m, p in profiles if p is not None]
    if not shares and gpu_models:  # the allowed models lack it (submit refuses that): ask the whole catalogue
        return _smallest_share(mig_profile, ())
    return min(shares, default=WHOLE_GPU)


def held_equivalents(kind: str, *, blocks: int = 0, mig_profile: str | None = None,
                     gpu_model: str | None = None) -> float:
    """Whole-GPU equivalents of one held slice: an allocation row or a ledger interval.

    ``kind`` is ``gpu``, ``mig``, ``blocks`` or ``cpu``; ``mig_profile`` is set
    for a MIG instance and for blocks of a shared MIG instance.
    """
    if kind == SliceKind.GPU:
        return WHOLE_GPU
    if kind == SliceKind.MIG:
        return mig_share(mig_profile, gpu_model) if mig_profile else WHOLE_GPU
    if kind == SliceKind.BLOCKS:
        device = mig_share(mig_profile, gpu_model) if mig_profile else WHOLE_GPU
        return blocks / BLOCKS_PER_GPU * device
    return 0.0


def request_equivalents(request: Request) -> float:
    """Whole-GPU equivalents of a request, every gang member counted (the model may be unchosen)."""
    if request.blocks:
        each = request.blocks / BLOCKS_PER_GPU
    elif request.mig_profile:
        each = _smallest_share(request.mig_profile, request.gpu_models) * request.mig_count
    else:
        each = request.gpus * WHOLE_GPU
    return each * request.replicas

"""gpuq's rule per workload: which fragment measure the default policy scores with.

One decision, taken once per target workload and cluster, by the openb replay
(:func:`partitioner.simulate.gpuq_variant`) and the live
:class:`partitioner.place.Packer` alike (docs/partitioner.md, "Rule per workload"). Both hand
it the same inputs in the same units: the target workload's shapes, most frequent first
(:func:`most_common_covering`), and the cluster's GPU capacity and CPU.

Variants (the replay kernel's ``variant``, the live kernel's too):

* ``VARIANT_FGD`` (0): FGD's fragment alone, under the load rule;
* ``VARIANT_MULTI`` (1): the CPU-bounded multi-task fragment alone (the old live gpuq);
* ``VARIANT_SUMMED`` (2): both summed, under the load rule (the fallback);
* ``VARIANT_LEX`` (3): FGD's score over FGD's shapes first, the multi-task fragment's
  ``GPUQ_LEVELS``-level score among its ties, from the first arrival (no load rule).

Pure Python and numpy: importing it compiles nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = ["FGD_COVERAGE", "GPUQ_COVERAGE", "GPUQ_LEVELS", "LEX_MIN_HALF", "PINNED_LIMIT", "VARIANT_FGD",
           "VARIANT_LEX", "VARIANT_MULTI", "VARIANT_SUMMED", "TargetWorkload", "choose_variant", "cpu_bound",
           "most_common_covering", "pinned_workload", "sliver_heavy"]

VARIANT_FGD = 0
VARIANT_MULTI = 1
VARIANT_SUMMED = 2
VARIANT_LEX = 3  # = kernels.replay.VARIANT_LEX (tests/partitioner/test_gpuq_rule.py checks it)

GPUQ_LEVELS = 30.0  # gpuq scores ⌊30·σ(ΔF/1000)⌋ (its multi-task term; docs/partitioner.md)
GPUQ_COVERAGE = 0.98  # gpuq's target workload covers 98 % of tasks
FGD_COVERAGE = 0.95  # FGD's covers 95 %: with the same counts, a prefix of gpuq's
PINNED_LIMIT = 0.05  # above this share of model-pinned GPU shapes, gpuq drops its multi-task term
LEX_MIN_HALF = 0.25  # the lexicographic rule needs this share of sharing tasks to ask more than half a GPU

MILLI = 1000

K = TypeVar("K")


def most_common_covering(counts: Counter[K], coverage: float) -> list[tuple[K, int]]:
    """The most frequent keys of ``counts`` until they cover ``coverage`` of the total (FGD's target workload).

    Ties in count keep first-seen order (``Counter.most_common`` is a stable sort), so FGD's
    95 % is always a prefix of gpuq's 98 % over the same counts.
    """
    total = sum(counts.values())
    chosen: list[tuple[K, int]] = []
    covered = 0
    for key, count in counts.most_common():
        chosen.append((key, count))
        covered += count
        if covered >= coverage * total:
            break
    return chosen


@dataclass(frozen=True)
class TargetWorkload:
    """Target shapes as the rule sees them, one entry per shape.

    ``p`` frequency (over all tasks, not renormalised), ``ngpu`` GPUs per task (0: CPU-only),
    ``milli`` share per GPU in thousandths (1000: whole GPUs, 0: CPU-only), ``cpu`` millicores
    per task, ``pinned`` the shape may run on some GPU models only.
    """

    p: np.ndarray
    ngpu: np.ndarray
    milli: np.ndarray
    cpu: np.ndarray
    pinned: np.ndarray


def pinned_workload(w: TargetWorkload) -> bool:
    """Model-pinned GPU shapes carry more than ``PINNED_LIMIT`` of the target workload's frequency."""
    return float(w.p[(w.ngpu > 0) & w.pinned].sum()) > PINNED_LIMIT


def cpu_bound(w: TargetWorkload, capacity_milli: int, cluster_cpu_milli: int) -> bool:
    """The target workload runs out of CPU before it fills the GPUs.

    CPU per GPU share of the shapes (frequency-weighted, CPU-only shapes included), times the
    cluster's GPU capacity, against the cluster's CPU. There the multi-task term's tie-break
    loses from the first arrival (it counts GPUs behind exhausted CPU as fragment and moves
    work onto them: CPU-heavy mix, docs/partitioner.md) and gpuq keeps the load rule, which on
    such a cluster is FGD (it never reaches 90 % of its GPUs).
    """
    gpu = float((w.p * w.ngpu * w.milli).sum())
    cpu = float((w.p * w.cpu).sum())
    return gpu <= 0 or cpu / gpu * capacity_milli >= float(cluster_cpu_milli)


def sliver_heavy(w: TargetWorkload) -> bool:
    """At least ``LEX_MIN_HALF`` of the sharing tasks ask more than half a GPU.

    Two of those never share a GPU, so each leaves a sliver: that is where the lexicographic
    rule's gain is (the sliver bound, docs/partitioner.md). Where sharing tasks are small, any
    gap takes them, the tie-break has nothing to gain early and it strands 8-GPU nodes (tiny
    shares mix: 8-GPU tasks failed from 45 % arrived).
    """
    sharing = (w.ngpu == 1) & (w.milli > 0) & (w.milli < MILLI)
    total = float(w.p[sharing].sum())
    half = float(w.p[sharing & (w.milli > MILLI // 2)].sum())
    return total > 0 and half >= LEX_MIN_HALF * total


def choose_variant(w: TargetWorkload, capacity_milli: int, cluster_cpu_milli: int, fgd_is_prefix: bool) -> int:
    """gpuq's rule for target workload ``w`` (gpuq's 98 %) on a cluster of that GPU capacity and CPU.

    * pinned workloads (:func:`pinned_workload`): FGD's fragment alone (``VARIANT_FGD``), with
      gpuq's levels and coverage past the load rule; the multi-task term measured 3.5-4 points
      worse than FGD there;
    * the lexicographic rule (``VARIANT_LEX``) where the workload leaves slivers
      (:func:`sliver_heavy`), is not CPU-bound (:func:`cpu_bound`) and FGD's shapes are a prefix
      of gpuq's (``fgd_is_prefix``: the rule's first key is FGD's score over them);
    * else FGD + multi-task summed under the load rule (``VARIANT_SUMMED``).
    """
    if pinned_workload(w):
        return VARIANT_FGD
    if fgd_is_prefix and sliver_heavy(w) and not cpu_bound(w, capacity_milli, cluster_cpu_milli):
        return VARIANT_LEX
    return VARIANT_SUMMED

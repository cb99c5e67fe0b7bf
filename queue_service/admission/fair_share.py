"""Fair-share standing: recent usage, decayed with a half-life, per unit of project weight.

Usage of an interval [start, end] held at rate r (GPU equivalents), seen at
``now`` with half-life h, is r × ∫ 2^-(now-t)/h dt over the interval, i.e.
r × h/ln2 × (2^-(now-end)/h − 2^-(now-start)/h): last week's GPU-hour
weighs half of today's when h is a week.

What an interval is charged at (``GPUQ_FAIR_SHARE_CHARGE``, :func:`charged`):
``allocated`` (the default) charges what the job held, busy or not;
``used`` charges what it held × its measured busy share (SM-busy
GPU-equivalent time over held time, from the agents' samples), so a
project whose jobs sit on idle GPUs pays for the little they used. A job
with no SM figure (no NVML, simulated GPUs, MIG instances) is charged what
it held in either mode: nothing measured is never free.

The trade-off (README, Governance): ``allocated`` is ungameable by idling
and charges the capacity others could not use, but it charges a bursty job
for its quiet minutes; ``used`` rewards efficient work and penalises
nothing bursty, but a project that grabs GPUs and leaves them idle keeps
a good standing while it blocks others — pair it with the idle flag (and
``GPUQ_IDLE_RECLAIM``) so idling is seen and, if wanted, reclaimed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

CHARGE_MODES = ("allocated", "used")


def charged(gpu_equivalents: float, busy_share: float | None, mode: str) -> float:
    """GPU equivalents an interval is charged at: as held (``allocated``), or × busy share (``used``)."""
    if mode == "used" and busy_share is not None:
        return gpu_equivalents * min(1.0, max(0.0, busy_share))
    return gpu_equivalents


@dataclass(frozen=True, slots=True)
class UsageInterval:
    project: str
    gpu_equivalents: float
    start: datetime
    end: datetime | None  # None: still held


def decayed_usage(intervals: Iterable[UsageInterval], *, now: datetime, half_life_s: float) -> dict[str, float]:
    """Decayed GPU-equivalent seconds per project."""
    usage: dict[str, float] = {}
    scale = half_life_s / math.log(2)
    for iv in intervals:
        end = min(iv.end or now, now)
        if end <= iv.start:
            continue
        age_end = (now - end).total_seconds()
        age_start = (now - iv.start).total_seconds()
        held = scale * (2 ** (-age_end / half_life_s) - 2 ** (-age_start / half_life_s))
        usage[iv.project] = usage.get(iv.project, 0.0) + iv.gpu_equivalents * held
    return usage


def standings(usage: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Usage per unit of weight (a project with weight 2 may use twice as much for the same standing)."""
    return {project: usage.get(project, 0.0) / max(weight, 1e-9) for project, weight in weights.items()}

"""Who gives capacity back to a blocked job, and why.

A waiting job may preempt a running job only if:

- the victim is preemptible (its priority class says so) and ranks strictly
  lower (lower effective priority), or
- the victim is *borrowed* capacity the waiting job's project is owed: the
  waiting project would stay within its guarantee, and the victim's project
  holds more than its own guarantee;

and never a job that started less than ``min_run_s`` ago (no preemption
loops: a job keeps its rank when requeued and cannot be bounced again at
once). Victims are chosen lowest rank first, most recently started first
among equals, then pruned to the fewest that still make room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from partitioner.types import ClusterState, Request
from queue_service.admission.packer import PackerFactory
from queue_service.admission.recarve import Repartitioner, fits_on
from queue_service.admission.snapshot import PendingJob, Quota, RunningJob
from queue_service.admission.state import release_placements

MAX_CANDIDATES = 64  # bound the search; the fewest victims are almost always among the lowest-ranked


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop ``victims`` so ``job_id`` can run; ``why`` is shown on both sides."""

    job_id: str
    victims: tuple[str, ...]
    why: str


def eligible(
    waiting: PendingJob,
    victim: RunningJob,
    *,
    now: datetime,
    min_run_s: float,
    usage: dict[str, float],
    quotas: dict[str, Quota],
) -> str | None:
    """Why ``victim`` may be preempted for ``waiting``, or None if it may not."""
    lower = victim.preemptible and victim.effective_priority < waiting.effective_priority
    mine = quotas.get(waiting.project)
    if not lower and (mine is None or victim.project == waiting.project):
        return None  # neither reason can hold: skip the clock (this runs for every running job, every cycle)
    if victim.stopping or victim.started_at is None:
        return None
    if (now - victim.started_at).total_seconds() < min_run_s:
        return None
    if lower:
        return "lower priority"
    theirs = quotas.get(victim.project, Quota())
    if (
        mine is not None
        and victim.project != waiting.project
        and usage.get(waiting.project, 0.0) + waiting.gpu_equivalents <= mine.guaranteed + 1e-9
        and usage.get(victim.project, 0.0) > theirs.guaranteed + 1e-9
    ):
        return f"borrowed capacity project {waiting.project} is guaranteed"
    return None


def choose_victims(
    waiting: PendingJob,
    cluster: ClusterState,
    running: Sequence[RunningJob],
    packer_factory: PackerFactory,
    *,
    repartition: Repartitioner | None = None,
    now: datetime,
    min_run_s: float,
    usage: dict[str, float],
    quotas: dict[str, Quota],
) -> Preemption | None:
    """The fewest, lowest-ranked victims whose capacity lets ``waiting`` fit, or None."""

    def _fits(freed: ClusterState, request: Request) -> bool:
        return fits_on(freed, request, packer_factory, repartition) is not None

    reasons = {}
    for r in running:
        why = eligible(waiting, r, now=now, min_run_s=min_run_s, usage=usage, quotas=quotas)
        if why is not None:
            reasons[r.job_id] = why
    if not reasons:
        # Nothing may be stopped for it: the answer is None whether or not room is coming, so skip the
        # fit check below (a packer and a re-carving search each cycle the head waits, with a long queue).
        return None
    # Jobs already stopping free their capacity anyway: count it first.
    stopping = [r for r in running if r.stopping]
    base = release_placements(cluster, [r.placement for r in stopping])
    if _fits(base, waiting.request):
        return None  # room is coming: no new victims
    candidates = sorted(
        (r for r in running if r.job_id in reasons),
        key=lambda r: (r.effective_priority, -(r.started_at.timestamp() if r.started_at else 0.0), r.job_id),
    )[:MAX_CANDIDATES]
    chosen: list[RunningJob] = []
    for victim in candidates:
        chosen.append(victim)
        if _fits(release_placements(base, [v.placement for v in chosen]), waiting.request):
            break
    else:
        return None
    # Prune: drop any victim the others make unnecessary, highest-ranked first.
    for victim in sorted(chosen, key=lambda r: (-r.effective_priority, r.job_id)):
        rest = [v for v in chosen if v is not victim]
        if rest and _fits(release_placements(base, [v.placement for v in rest]), waiting.request):
            chosen = rest
    why = "; ".join(sorted({reasons[v.job_id] for v in chosen}))
    return Preemption(waiting.job_id, tuple(v.job_id for v in chosen), why)




"""One admission cycle, as numbered steps. Pure: the caller persists the decisions.

Invariants:
- all or nothing: a job is admitted with every gang member placed, or not at all;
- no hold-and-wait: a waiting job holds nothing, so there is no deadlock;
- strict order (v0): the first job that does not fit blocks the jobs behind it,
  so it cannot be overtaken forever; jobs that can *never* fit are set aside
  with that reason instead of blocking everybody.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from partitioner.types import ClusterState, LayoutChange, NoFit, Placement, Request

from queue_service.admission.ordering import ordered
from queue_service.admission.snapshot import PendingJob, Snapshot
from queue_service.admission.state import apply_changes, apply_placements


class PackerLike:
    """What the cycle needs from a packer (``partitioner.place.Packer`` satisfies it)."""

    def place(self, request: Request) -> Placement | NoFit: ...  # pragma: no cover

    def commit(self, placement: Placement) -> None: ...  # pragma: no cover


PackerFactory = Callable[[ClusterState], PackerLike]
# Proposes mode / MIG-layout changes of idle GPUs that would let the requests run.
Repartitioner = Callable[[ClusterState, list[Request]], list[LayoutChange]]


@dataclass(frozen=True, slots=True)
class Admission:
    """A decision to admit one job onto concrete slices."""

    job_id: str
    placement: Placement


@dataclass(slots=True)
class CycleResult:
    """What one cycle decided: who is admitted, and why everyone else waits."""

    admitted: list[Admission] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # job_id -> reason
    never: dict[str, str] = field(default_factory=dict)  # job_id -> why it can never fit
    layout_changes: list[LayoutChange] = field(default_factory=list)  # idle GPUs re-carved this cycle


def run_cycle(
    snapshot: Snapshot, packer_factory: PackerFactory, repartition: Repartitioner | None = None
) -> CycleResult:
    """Decide admissions for one snapshot."""
    result = CycleResult()
    # 1. Snapshot: encode free capacity once; commits below update it in place.
    cluster = snapshot.cluster
    packer = packer_factory(cluster)
    # 2. Order: the documented total order (ordering.py).
    queue = ordered(snapshot.pending)
    # 3. Walk: admit what fits whole; the first job that does not fit blocks the rest.
    blocker: PendingJob | None = None
    for job in queue:
        if blocker is not None:
            result.waiting[job.job_id] = f"waiting behind job {blocker.job_id} (earlier in the queue)"
            continue
        decision = packer.place(job.request)
        if isinstance(decision, NoFit) and not decision.never and repartition is not None:
            # 3a. Re-carve idle GPUs, but only for the first job that does not fit, and only
            # with what is idle after every higher-ranked admission: a mode change never
            # takes capacity from a job that ranks before it.
            taken = apply_placements(cluster, (a.placement for a in result.admitted))
            changes = repartition(taken, [job.request])
            if changes:
                trial_cluster = apply_changes(cluster, changes)
                trial = packer_factory(trial_cluster)
                for earlier in result.admitted:
                    trial.commit(earlier.placement)
                retry = trial.place(job.request)
                if isinstance(retry, Placement):
                    cluster, packer, decision = trial_cluster, trial, retry
                    result.layout_changes.extend(changes)
        if isinstance(decision, Placement):
            packer.commit(decision)
            result.admitted.append(Admission(job.job_id, decision))
        elif decision.never:
            result.never[job.job_id] = decision.reason
        else:
            blocker = job
            result.waiting[job.job_id] = decision.reason
    return result

"""The admission cycle as it was before its long-queue speed-ups (commit 9149875), kept as the slow reference.

``tests/unit/test_admission_cycle_reference.py`` runs it beside ``queue_service.admission.cycle.run_cycle``
on random snapshots and requires the same decisions: admissions (job, placement, backfill flag), reasons,
never-fit set, re-carvings, preemptions, reservation and deferred jobs. Verbatim copies of ``run_cycle``,
``backfill.reserve``, ``preemption.choose_victims`` and ``eligible`` and the reasons' ``describe`` at that commit;
the other helpers they call are the live ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from partitioner.types import ClusterState, NoFit, Placement, Request
from queue_service.admission.backfill import Reservation, ends_before, reserved_view
from queue_service.admission.cycle import (
    CycleResult,
    _admit,
    _admitted_as_running,
    _recarve,
    _stopping,
    describe_never,
)
from queue_service.admission.ordering import ordered
from queue_service.admission.packer import PackerFactory, PackerLike
from queue_service.admission.preemption import MAX_CANDIDATES, Preemption
from queue_service.admission.recarve import Repartitioner, fits_on
from queue_service.admission.snapshot import PendingJob, Quota, RunningJob, Snapshot
from queue_service.admission.state import apply_placements, release_placements


def reference_run_cycle(
    snapshot: Snapshot, packer_factory: PackerFactory, repartition: Repartitioner | None = None,
    *, max_recarves: int = 8,
) -> CycleResult:
    """Decide admissions, re-carvings and preemptions for one snapshot.

    Re-carving rebuilds the packer, so a cycle re-carves at most
    ``max_recarves`` times; past that it stops walking (``result.deferred``)
    and the admitter runs the next cycle at once. That bounds how long one
    cycle holds the admission lock on a cold start with thousands of jobs.
    """
    result = CycleResult()
    now = snapshot.now
    # 1. Snapshot: encode free capacity once; admissions below are committed into it.
    cluster = snapshot.cluster
    packer = packer_factory(cluster)
    usage = snapshot.usage_by_project()
    view: PackerLike | None = None  # the cluster with the head's reservation taken (backfill checks)
    head: PendingJob | None = None
    no_fit: dict[tuple[str, Request], NoFit] = {}  # backfill: shapes known not to fit
    recarves = 0
    # 2. Order: the documented total order (ordering.py).
    queue = ordered(snapshot.pending)
    for position, job in enumerate(queue):
        # 3. Quota: a project never goes past its guarantee plus borrowing limit.
        quota = snapshot.quotas.get(job.project)
        used = usage.get(job.project, 0.0)
        if quota is not None and used + job.gpu_equivalents > quota.ceiling + 1e-9:
            result.waiting[job.job_id] = (
                f"project quota reached: {job.project} holds {used:g} of {quota.ceiling:g} GPU equivalents"
            )
            continue
        if head is None:
            # 4. Fit in order, re-carving idle GPUs if that is what it takes.
            decision = packer.place(job.request)
            if isinstance(decision, NoFit) and not decision.never and repartition is not None:
                if recarves >= max_recarves:
                    result.deferred.extend(j.job_id for j in queue[position:])
                    break
                recarves += 1
                decision, packer, cluster = _recarve(job, decision, cluster, packer, packer_factory, repartition,
                                                     result)
            if isinstance(decision, Placement):
                _admit(result, job, decision, packer, view, usage)
                continue
            if decision.never:
                result.never[job.job_id] = describe_never(decision.reason, snapshot.cluster)
                continue
            # 5. The head is blocked: preempt for it if it is entitled, then reserve.
            head = job
            taken = apply_placements(cluster, (a.placement for a in result.admitted))
            preemption = reference_choose_victims(
                job, taken, snapshot.running, packer_factory, repartition=repartition, now=now,
                min_run_s=snapshot.min_run_s, usage=usage, quotas=snapshot.quotas,
            )
            running = list(snapshot.running)
            if preemption is not None:
                result.preemptions.append(preemption)
                running = [_stopping(r, now) if r.job_id in preemption.victims else r for r in running]
            # Jobs admitted earlier in this cycle hold capacity in ``taken`` too: the reservation must
            # know when they end (their time limits), or it would wait for "jobs without a time limit".
            running.extend(_admitted_as_running(result.admitted, queue[:position], now))
            result.reservation = reservation = reference_reserve(job.job_id, job.request, taken, running,
                                                                 packer_factory, repartition)
            view = packer_factory(reserved_view(taken, reservation))
            result.waiting[job.job_id] = _head_reason(decision, preemption, reservation, cluster)
            continue
        # 6. Backfill behind the reserved head: only what cannot delay it.
        if result.reservation is None or view is None:
            raise RuntimeError("a blocked head always leaves a reservation and a reserved view")  # step 5 sets both
        reservation = result.reservation
        held_for = f"job {head.job_id}" + (f", reserved from {reservation.start:%H:%M:%S}" if reservation.start else "")
        if job.time_limit_s is None:
            result.waiting[job.job_id] = f"waiting behind {held_for}: jobs without a time limit cannot backfill"
            continue
        # Behind the head only commits happen, so free capacity only shrinks: a shape that did
        # not fit will not fit later in this cycle either (this keeps a long queue cheap).
        decision = no_fit.get(("now", job.request)) or packer.place(job.request)
        if isinstance(decision, NoFit):
            no_fit[("now", job.request)] = decision
            if decision.never:
                result.never[job.job_id] = describe_never(decision.reason, snapshot.cluster)
            else:
                result.waiting[job.job_id] = f"{decision.reason} (and behind {held_for})"
            continue
        if not ends_before(now, job.time_limit_s, reservation):
            decision = no_fit.get(("view", job.request)) or view.place(job.request)
            if isinstance(decision, NoFit):
                no_fit[("view", job.request)] = decision
                result.waiting[job.job_id] = (
                    f"waiting for {describe(reservation.placement, cluster)} reserved for {held_for}"
                )
                continue
        _admit(result, job, decision, packer, view, usage, backfill=True)
    return result


def reference_reserve(
    job_id: str,
    request: Request,
    cluster: ClusterState,
    running: Sequence[RunningJob],
    packer_factory: PackerFactory,
    repartition: Repartitioner | None = None,
) -> Reservation:
    """Find the earliest moment ``request`` fits as running jobs end.

    Releasing more jobs only frees capacity, so "fits once the first k have
    ended" is monotone in k. One packer walks k up and down by releasing and
    re-committing placements: a galloping search (k = 1, 2, 4, …) then a
    binary search, O(log n) placements and no re-encoding of the cluster.
    Only if the head needs idle GPUs re-carved does it fall back to building
    the freed cluster for each probe.
    """
    timed = sorted((r for r in running if r.expected_end is not None), key=lambda r: (r.expected_end, r.job_id))
    untimed = [r for r in running if r.expected_end is None]
    packer = packer_factory(cluster)
    released = 0

    def fits_after_release(k: int) -> Placement | None:
        nonlocal released
        while released < k:
            packer.release(timed[released].placement)
            released += 1
        while released > k:
            released -= 1
            packer.commit(timed[released].placement)
        got = packer.place(request)
        return got if isinstance(got, Placement) else None

    def fits_after(k: int, extra: Sequence[RunningJob] = ()) -> Placement | None:
        freed = release_placements(cluster, [r.placement for r in [*timed[:k], *extra]])
        return fits_on(freed, request, packer_factory, repartition)  # idle GPUs may be re-carved by then

    probe = fits_after_release
    if not timed or fits_after_release(len(timed)) is None:
        if fits_after(len(timed)) is None:
            return Reservation(job_id, None, fits_after(len(timed), untimed))
        probe = fits_after  # it fits only with re-carving: probe on rebuilt clusters
    lo, hi, k = 0, len(timed), 1  # invariant: fits after hi endings, not after lo
    while k < hi:  # gallop: small k first, the head usually needs only a few jobs to end
        if probe(k) is not None:
            hi = k
            break
        lo, k = k, k * 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if probe(mid) is not None:
            hi = mid
        else:
            lo = mid
    placement = probe(hi)
    return Reservation(job_id, timed[hi - 1].expected_end if hi > 0 else None, placement)


def reference_choose_victims(
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

    # Jobs already stopping free their capacity anyway: count it first.
    stopping = [r for r in running if r.stopping]
    base = release_placements(cluster, [r.placement for r in stopping])
    if _fits(base, waiting.request):
        return None  # room is coming: no new victims
    reasons = {}
    for r in running:
        why = eligible(waiting, r, now=now, min_run_s=min_run_s, usage=usage, quotas=quotas)
        if why is not None:
            reasons[r.job_id] = why
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


def describe(placement: Placement | None, cluster: ClusterState) -> str:
    """'2× h100-80gb (gpu0, gpu1) on node-a' for wait reasons: nodes and GPUs by name, never by id."""
    if placement is None:
        return "capacity"
    gpus = {g.uuid: g for n in cluster.nodes for g in n.gpus}
    names = {n.node_id: n.name or n.node_id for n in cluster.nodes}
    parts = []
    for member in placement.replicas:
        held = sorted({s.gpu_uuid for s in member.slices}, key=lambda u: gpus[u].index if u in gpus else 0)
        model = gpus[held[0]].model if held and held[0] in gpus else "GPU"
        named = ", ".join(f"gpu{gpus[u].index}" for u in held if u in gpus)
        what = f"{len(held)}× {model}" + (f" ({named})" if named else "") if held else "CPU"
        parts.append(f"{what} on {names.get(member.node_id, member.node_id)}")
    return ", ".join(parts)


def _head_reason(decision: NoFit, preemption: Preemption | None, reservation: Reservation,
                 cluster: ClusterState) -> str:
    if preemption is not None:
        return f"preempting {len(preemption.victims)} job(s) ({preemption.why}); starts when they stop"
    if reservation.start is not None:
        held = describe(reservation.placement, cluster)
        return f"{decision.reason}; {held} reserved from {reservation.start:%H:%M:%S}"
    return f"{decision.reason}; waiting for jobs without a time limit to end"


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
    if victim.stopping or victim.started_at is None:
        return None
    if (now - victim.started_at).total_seconds() < min_run_s:
        return None
    if victim.preemptible and victim.effective_priority < waiting.effective_priority:
        return "lower priority"
    mine, theirs = quotas.get(waiting.project), quotas.get(victim.project, Quota())
    if (
        mine is not None
        and victim.project != waiting.project
        and usage.get(waiting.project, 0.0) + waiting.gpu_equivalents <= mine.guaranteed + 1e-9
        and usage.get(victim.project, 0.0) > theirs.guaranteed + 1e-9
    ):
        return f"borrowed capacity project {waiting.project} is guaranteed"
    return None

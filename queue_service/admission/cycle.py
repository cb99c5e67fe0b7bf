"""One admission cycle, as numbered steps. Pure: the caller persists the decisions.

Invariants:
- all or nothing: a job is admitted with every gang member placed, or not at all;
- no hold-and-wait: a waiting job holds nothing, so there is no deadlock;
- order: jobs are walked in the total order of ``ordering.py``; the first job
  that does not fit gets a reservation (``backfill.py``) and later jobs are
  admitted only as backfill that cannot delay it, so it is never overtaken
  forever; jobs that can *never* fit are set aside with that reason;
- quotas: no project goes past its guarantee plus borrowing limit;
- preemption (``preemption.py``) frees room for the blocked head only, from
  strictly lower-ranked preemptible jobs or borrowed capacity it is owed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from partitioner.types import ClusterState, LayoutChange, NoFit, Placement, Request
from queue_service.admission.backfill import Reservation, ends_before, reserve, reserved_view
from queue_service.admission.ordering import ordered
from queue_service.admission.packer import PackerFactory, PackerLike
from queue_service.admission.preemption import Preemption, choose_victims
from queue_service.admission.recarve import Repartitioner, recarve
from queue_service.admission.snapshot import PendingJob, RunningJob, Snapshot
from queue_service.admission.state import apply_placements

__all__ = ["Admission", "CycleResult", "PackerFactory", "PackerLike", "Repartitioner", "run_cycle"]


@dataclass(frozen=True, slots=True)
class Admission:
    """A decision to admit one job onto concrete slices."""

    job_id: str
    placement: Placement
    backfill: bool = False  # admitted behind a blocked head


@dataclass(slots=True)
class CycleResult:
    """What one cycle decided: who is admitted, who is stopped, and why everyone else waits."""

    admitted: list[Admission] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # job_id -> reason
    never: dict[str, str] = field(default_factory=dict)  # job_id -> why it can never fit
    layout_changes: list[LayoutChange] = field(default_factory=list)  # idle GPUs re-carved this cycle
    preemptions: list[Preemption] = field(default_factory=list)
    reservation: Reservation | None = None
    deferred: list[str] = field(default_factory=list)  # not looked at: the cycle hit its re-carving budget

    @property
    def incomplete(self) -> bool:
        """True if the next cycle should follow at once (it continues where this one stopped)."""
        return bool(self.deferred)


def describe(placement: Placement | None, cluster: ClusterState) -> str:
    """'2× h100-80gb (gpu0, gpu1) on node-a' for wait reasons: nodes and GPUs by name, never by id."""
    if placement is None:
        return "capacity"
    # Only the placement's nodes are looked at (a cycle describes its head's reservation every time).
    on = {member.node_id for member in placement.replicas}
    nodes = [n for n in cluster.nodes if n.node_id in on]
    gpus = {g.uuid: g for n in nodes for g in n.gpus}
    if any(s.gpu_uuid not in gpus for member in placement.replicas for s in member.slices):
        gpus = {g.uuid: g for n in cluster.nodes for g in n.gpus}  # a slice named off its node: look everywhere
    names = {n.node_id: n.name or n.node_id for n in nodes}
    parts = []
    for member in placement.replicas:
        held = sorted({s.gpu_uuid for s in member.slices}, key=lambda u: gpus[u].index if u in gpus else 0)
        model = gpus[held[0]].model if held and held[0] in gpus else "GPU"
        named = ", ".join(f"gpu{gpus[u].index}" for u in held if u in gpus)
        what = f"{len(held)}× {model}" + (f" ({named})" if named else "") if held else "CPU"
        parts.append(f"{what} on {names.get(member.node_id, member.node_id)}")
    return ", ".join(parts)


def describe_never(reason: str, cluster: ClusterState) -> str:
    """A never-fit reason that says which nodes were left out (cordoned, draining, down), if any were."""
    if not cluster.unschedulable:
        return reason
    left_out = ", ".join(cluster.unschedulable)
    if not cluster.nodes:
        return f"no schedulable node: {left_out}"
    return f"{reason} (not counting {left_out})"


def run_cycle(
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
    # Usage is read only against quotas (step 3, and preemption for owed capacity): without quotas a
    # long running list is not summed every cycle.
    usage = snapshot.usage_by_project() if snapshot.quotas else {}
    view: PackerLike | None = None  # the cluster with the head's reservation taken (backfill checks)
    head: PendingJob | None = None
    no_fit: dict[tuple[str, Request], NoFit] = {}  # backfill: shapes known not to fit
    held_for: str | None = None  # "job H, reserved from …": every backfill reason names the head
    reserved_as: str | None = None  # describe(the head's reservation), for the reasons of jobs it holds back
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
            preemption = choose_victims(
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
            result.reservation = reservation = reserve(job.job_id, job.request, taken, running, packer_factory,
                                                       repartition)
            view = packer_factory(reserved_view(taken, reservation))
            result.waiting[job.job_id] = _head_reason(decision, preemption, reservation, cluster)
            continue
        # 6. Backfill behind the reserved head: only what cannot delay it.
        if result.reservation is None or view is None:
            raise RuntimeError("a blocked head always leaves a reservation and a reserved view")  # step 5 sets both
        reservation = result.reservation
        if held_for is None:  # the same for every job behind the head: built once per cycle, not per job
            held_for = f"job {head.job_id}" + (f", reserved from {reservation.start:%H:%M:%S}"
                                               if reservation.start else "")
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
                if reserved_as is None:  # describe walks the whole cluster: once per cycle, not per job
                    reserved_as = describe(reservation.placement, cluster)
                result.waiting[job.job_id] = f"waiting for {reserved_as} reserved for {held_for}"
                continue
        _admit(result, job, decision, packer, view, usage, backfill=True)
    return result


def _admit(result: CycleResult, job: PendingJob, placement: Placement, packer: PackerLike,
           view: PackerLike | None, usage: dict[str, float], *, backfill: bool = False) -> None:
    packer.commit(placement)
    if view is not None:
        view.commit(placement)
    usage[job.project] = usage.get(job.project, 0.0) + job.gpu_equivalents
    result.admitted.append(Admission(job.job_id, placement, backfill))


def _recarve(job, decision, cluster, packer, packer_factory, repartition, result):
    """Re-carve idle GPUs for the first job that does not fit, with only what is idle after every
    higher-ranked admission: a mode change never takes capacity from a job that ranks before it."""
    found = recarve(job.request, cluster, packer, (a.placement for a in result.admitted), packer_factory,
                    repartition)
    if found is None:
        return decision, packer, cluster
    retry, trial, trial_cluster, changes = found
    result.layout_changes.extend(changes)
    return retry, trial, trial_cluster


def _admitted_as_running(admitted: list[Admission], earlier: list[PendingJob], now: datetime) -> list[RunningJob]:
    """This cycle's admissions as running jobs starting ``now``, ending by their time limits (None: unknown)."""
    by_id = {j.job_id: j for j in earlier}
    out = []
    for admission in admitted:
        job = by_id[admission.job_id]
        end = None if job.time_limit_s is None else now + timedelta(seconds=job.time_limit_s)
        out.append(RunningJob(job_id=job.job_id, project=job.project, placement=admission.placement,
                              effective_priority=job.effective_priority, preemptible=job.preemptible,
                              started_at=None, expected_end=end, gpu_equivalents=job.gpu_equivalents))
    return out


def _stopping(job: RunningJob, now) -> RunningJob:
    """A victim being stopped: its capacity is expected back within its grace period."""
    return replace(job, stopping=True, expected_end=now + timedelta(seconds=job.grace_s))


def _head_reason(decision: NoFit, preemption: Preemption | None, reservation: Reservation,
                 cluster: ClusterState) -> str:
    if preemption is not None:
        return f"preempting {len(preemption.victims)} job(s) ({preemption.why}); starts when they stop"
    if reservation.start is not None:
        held = describe(reservation.placement, cluster)
        return f"{decision.reason}; {held} reserved from {reservation.start:%H:%M:%S}"
    return f"{decision.reason}; waiting for jobs without a time limit to end"

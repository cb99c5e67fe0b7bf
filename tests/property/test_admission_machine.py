"""A hypothesis state machine over the pure admission cycle: submit, cancel, finish, node loss,
override, reclaim, time passing, and cycles, with the real partitioner as packer.

Invariants, checked after every step:
- capacity is never exceeded (whole GPUs held once, blocks <= 100, memory <= the GPU's);
- no project goes past its quota ceiling through an admission;
- jobs admitted in order precede the blocked head; later admissions are documented backfill,
  which ends before the head's reservation or stays off the GPUs it reserved;
- gangs are admitted whole; no job is both running and queued;
- a cycle on an unchanged state decides nothing new.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from partitioner.place import Packer
from partitioner.repartition import propose
from partitioner.types import BLOCKS_PER_GPU, ClusterState, GpuMode, Request, SliceKind
from queue_service.admission.backfill import ends_before
from queue_service.admission.cycle import run_cycle
from queue_service.admission.ordering import ordered
from queue_service.admission.snapshot import PendingJob, Quota, RunningJob, Snapshot
from queue_service.admission.state import apply_changes
from queue_service.admission.units import request_equivalents
from tests.support.builders import H100_MIB, T0, cluster, gpu, node, pending, running, snapshot

PROJECTS = ("alpha", "beta", "gamma")
QUOTAS = {"alpha": Quota(guaranteed=1.0, borrow_limit=0.5), "beta": Quota(guaranteed=1.0, borrow_limit=None)}
REQUESTS = st.one_of(
    st.builds(lambda n: Request(gpus=n), st.integers(1, 2)),
    st.builds(lambda b, m: Request(blocks=b, gpu_memory_mib=m), st.integers(1, 100), st.integers(1, 40000)),
    st.builds(lambda: Request(gpus=1, replicas=2)),
)


class AdmissionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.nodes = {f"n{i}": [f"n{i}-g{j}" for j in range(2)] for i in range(2)}
        self.modes: dict[str, GpuMode] = {g: GpuMode.EXCLUSIVE for gs in self.nodes.values() for g in gs}
        self.pending: dict[str, PendingJob] = {}
        self.running: dict[str, RunningJob] = {}
        self.seq = 0

    # -- the world as the cycle sees it ------------------------------------------
    def base(self) -> ClusterState:
        """The nodes left, idle, each GPU in its current mode."""
        return cluster(*(node(n, *(gpu(g, index=i, mode=self.modes[g]) for i, g in enumerate(uuids)))
                         for n, uuids in sorted(self.nodes.items())))

    def snapshot(self) -> Snapshot:
        return snapshot(self.base(), self.pending.values(), running=self.running.values(), quotas=QUOTAS,
                        now=self.now, min_run_s=30.0)

    # -- rules ---------------------------------------------------------------------
    @rule(request=REQUESTS, priority=st.sampled_from([100, 500, 1000]), project=st.sampled_from(PROJECTS),
          limit=st.one_of(st.none(), st.integers(10, 600)))
    def submit(self, request: Request, priority: int, project: str, limit: int | None) -> None:
        self.seq += 1
        job_id = f"j{self.seq:03d}"
        self.pending[job_id] = pending(job_id, request, project=project, priority=priority, submitted_at=self.now,
                                       time_limit_s=limit, preemptible=priority == 100)

    @rule()
    def cycle(self) -> None:
        snapshot = self.snapshot()
        result = run_cycle(snapshot, Packer, propose)
        self.check_decisions(snapshot, result)
        for change in result.layout_changes:
            self.modes[change.gpu_uuid] = change.mode
        usage = snapshot.usage_by_project()
        for admission in result.admitted:
            job = self.pending.pop(admission.job_id)
            usage[job.project] = usage.get(job.project, 0.0) + job.gpu_equivalents
            quota = QUOTAS.get(job.project)
            assert quota is None or usage[job.project] <= quota.ceiling + 1e-9, "quota exceeded"
            self.running[job.job_id] = running(
                job.job_id, admission.placement, project=job.project, priority=job.effective_priority,
                preemptible=job.preemptible, now=self.now, started_s_ago=0, ends_in_s=job.time_limit_s,
                gpu_equivalents=job.gpu_equivalents, grace_s=5.0,
            )
        for preemption in result.preemptions:
            for victim in preemption.victims:
                self.running[victim] = replace(self.running[victim], stopping=True,
                                               expected_end=self.now + timedelta(seconds=5))
        # The same state again: nothing new to decide (unless the first cycle stopped early).
        if result.incomplete:
            return
        again = run_cycle(self.snapshot(), Packer, propose)
        assert again.admitted == [] and again.preemptions == [] and again.layout_changes == [], again

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.running)))
        job = self.running.pop(job_id)
        if job.stopping:  # preempted or reclaimed: back in the queue at its original position
            self.requeue(job)

    @precondition(lambda self: self.pending or self.running)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        job_id = data.draw(st.sampled_from(sorted({*self.pending, *self.running})))
        self.pending.pop(job_id, None)
        self.running.pop(job_id, None)

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(data=st.data())
    def node_loss(self, data) -> None:
        node = data.draw(st.sampled_from(sorted(self.nodes)))
        for job_id, job in list(self.running.items()):
            if any(m.node_id == node for m in job.placement.replicas):
                self.requeue(self.running.pop(job_id))
        del self.nodes[node]

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), priority=st.integers(-10, 5000))
    def override(self, data, priority: int) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.pending)))
        self.pending[job_id] = replace(self.pending[job_id], priority_override=priority)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def reclaim(self, data) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.running)))
        self.running[job_id] = replace(self.running[job_id], stopping=True,
                                       expected_end=self.now + timedelta(seconds=5))

    @rule(seconds=st.integers(1, 120))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def requeue(self, job: RunningJob) -> None:
        number = int(job.job_id[1:])
        self.pending[job.job_id] = pending(
            job.job_id, self._request_of(job), project=job.project, priority=job.effective_priority,
            submitted_at=T0 + timedelta(microseconds=number), preemptible=job.preemptible,
            time_limit_s=None if job.expected_end is None else 60,
        )

    @staticmethod
    def _request_of(job: RunningJob) -> Request:
        first = job.placement.replicas[0].slices
        if first and first[0].kind is SliceKind.BLOCKS:
            return Request(blocks=first[0].blocks, gpu_memory_mib=first[0].memory_mib,
                           replicas=len(job.placement.replicas))
        return Request(gpus=len(first), replicas=len(job.placement.replicas))

    # -- checks ---------------------------------------------------------------------
    def check_decisions(self, snapshot: Snapshot, result) -> None:
        queued = {j.job_id: j for j in snapshot.pending}
        order = [j.job_id for j in ordered(snapshot.pending)]
        decided = [a.job_id for a in result.admitted] + list(result.waiting) + list(result.never) + result.deferred
        assert sorted(decided) == sorted(queued), "every pending job gets exactly one outcome"
        admitted_in_order = [a.job_id for a in result.admitted if not a.backfill]
        head = result.reservation.job_id if result.reservation else None
        for job_id in admitted_in_order:
            earlier = order[: order.index(job_id)]
            assert head not in earlier, "an in-order admission never passes the blocked head"
        for admission in result.admitted:
            job = queued[admission.job_id]
            assert len(admission.placement.replicas) == job.request.replicas, "gangs are admitted whole"
            if admission.backfill:
                reservation = result.reservation
                reserved = {s.gpu_uuid for m in (reservation.placement.replicas if reservation.placement else ())
                            for s in m.slices}
                used = {s.gpu_uuid for m in admission.placement.replicas for s in m.slices}
                assert ends_before(snapshot.now, job.time_limit_s, reservation) or not (used & reserved), (
                    "backfill may neither outlast the reservation nor touch its GPUs")
        for preemption in result.preemptions:
            assert preemption.job_id == head, "only the blocked head preempts"

    @invariant()
    def capacity_never_exceeded(self) -> None:
        held: dict[str, int] = {}
        blocks: dict[str, int] = {}
        memory: dict[str, int] = {}
        for job in self.running.values():
            for member in job.placement.replicas:
                for s in member.slices:
                    if s.kind is SliceKind.GPU:
                        held[s.gpu_uuid] = held.get(s.gpu_uuid, 0) + 1
                    else:
                        blocks[s.gpu_uuid] = blocks.get(s.gpu_uuid, 0) + s.blocks
                        memory[s.gpu_uuid] = memory.get(s.gpu_uuid, 0) + s.memory_mib
        for uuid in {*held, *blocks}:
            assert held.get(uuid, 0) <= 1, f"{uuid} held twice"
            assert not (held.get(uuid) and blocks.get(uuid)), f"{uuid} held whole and shared"
            assert blocks.get(uuid, 0) <= BLOCKS_PER_GPU and memory.get(uuid, 0) <= H100_MIB, f"{uuid} over-allocated"

    @invariant()
    def no_job_both_running_and_queued(self) -> None:
        assert not (set(self.pending) & set(self.running))


AdmissionMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestAdmissionMachine = AdmissionMachine.TestCase


def test_gpu_equivalents_units() -> None:
    assert request_equivalents(Request(gpus=2, replicas=3)) == 6
    assert request_equivalents(Request(blocks=25, gpu_memory_mib=1)) == 0.25
    assert abs(request_equivalents(Request(mig_profile="3g.40gb")) - 3 / 7) < 1e-9
    assert apply_changes(ClusterState(()), []) == ClusterState(())

"""The admitter: one at a time, it turns the pure cycle's decisions into allocations and launches.

Steps of ``run_once`` (each cycle, under the admission lock):

1. expire node leases;
2. snapshot: schedulable nodes with free capacity, and the queued jobs;
3. decide (``admission.cycle.run_cycle``, pure);
4. persist in one transaction: job → admitted, attempt row, allocation rows
   (the database refuses a slice held twice), wait reasons;
5. after commit, send launch commands (a lost one is re-sent by ``reconcile``).

Only one admitter runs at a time: a PostgreSQL advisory lock held for the
cycle's transaction (a second replica's cycle skips), SQLite's single writer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from partitioner.types import ClusterState, GpuMode, GpuState, MigInstance, NodeState, NoFit, Request
from queue_service.admission.cycle import CycleResult, PackerFactory, Repartitioner, run_cycle
from queue_service.admission.snapshot import PendingJob, Snapshot
from queue_service.db.base import new_id, utcnow
from queue_service.db.models import Allocation, Attempt, Gpu, Job, JobState, Node, NodeStatus, Project
from queue_service.dispatch import Dispatcher
from queue_service import snapshots
from queue_service.services import classes as class_service
from queue_service.services import nodes as node_service
from queue_service.services import operator as operator_service
from queue_service.services import quotas as quota_service
from queue_service.services.convert import request_for
from queue_service.settings import Settings
from workers.messages import LaunchSpec, StopRequest

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x67707571  # "gpuq"
ALLOCATION_COLUMNS = ("id", "job_id", "attempt", "replica", "node_id", "kind", "gpu_uuid", "slot", "blocks",
                      "gpu_memory_mib", "mig_profile", "mig_start", "mig_uuid", "cpus_milli", "memory_mib",
                      "created_at")


@dataclass(frozen=True, slots=True)
class CycleReport:
    admitted: int
    waiting: int
    duration_s: float
    skipped: bool = False


def build_cluster(session: Session, *, include_usage: bool = True) -> ClusterState:
    """The schedulable nodes (ready, not cordoned, lease valid) with their free capacity."""
    now = utcnow()
    nodes = session.scalars(
        select(Node)
        .where(Node.status == NodeStatus.READY, Node.cordoned.is_(False))
        .where(Node.lease_expires_at >= now)
        .order_by(Node.name)
    ).all()
    if not nodes:
        return ClusterState(())
    usage = node_service.usage(session) if include_usage else {}
    gpus = session.scalars(
        select(Gpu).where(Gpu.present.is_(True), Gpu.node_id.in_([n.id for n in nodes])).order_by(Gpu.index)
    ).all()
    by_node: dict[str, list[Gpu]] = {}
    for gpu in gpus:
        by_node.setdefault(gpu.node_id, []).append(gpu)
    states = []
    for node in nodes:
        used = usage.get(node.id, node_service.NodeUsage())
        gpu_states = []
        for gpu in by_node.get(node.id, []):
            u = used.gpus.get(gpu.uuid, node_service.GpuUsage())
            mig = tuple(
                MigInstance(profile=m["profile"], start=m["start"], uuid=m.get("uuid"), held=m["start"] in u.mig_held)
                for m in gpu.mig_layout or []
            )
            missing = u.mig_held - {m.start for m in mig}
            if missing:  # held instances the layout does not list: never offer them again
                mig += tuple(MigInstance(profile=u.mig_profiles[s], start=s, held=True) for s in sorted(missing))
            gpu_states.append(
                GpuState(
                    uuid=gpu.uuid, index=gpu.index, model=gpu.model, memory_mib=gpu.memory_mib,
                    sm_count=gpu.sm_count, mode=GpuMode(gpu.mode), held=u.held_whole,
                    used_blocks=0 if u.held_whole else u.used_blocks, used_memory_mib=u.used_memory_mib,
                    mig_instances=mig, nvlink_peers=tuple(gpu.nvlink_peers or ()),
                )
            )
        states.append(
            NodeState(
                node_id=node.id, cpus_milli=node.cpus * 1000, memory_mib=node.memory_mib,
                free_cpus_milli=node.cpus * 1000 - used.cpus_milli, free_memory_mib=node.memory_mib - used.memory_mib,
                gpus=tuple(gpu_states),
            )
        )
    return ClusterState(tuple(states))


class Feasibility:
    """Does a request fit the registered cluster *ever* (on empty nodes)? Cached between submissions.

    The answer depends only on which nodes and GPUs exist, so one packer over
    the emptied cluster serves every submission for ``ttl_s`` seconds (or until
    a node registers), with answers memoised per request shape.
    """

    def __init__(self, packer_factory: PackerFactory, *, ttl_s: float = 2.0) -> None:
        self.packer_factory = packer_factory
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._built_at = -1e9
        self._packer = None
        self._empty = True
        self._memo: dict[Request, NoFit | None] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._built_at = -1e9

    def check(self, session: Session, request: Request) -> NoFit | None:
        """None if it could fit (or nothing is registered yet: it is then held with a reason)."""
        with self._lock:
            if time.monotonic() - self._built_at > self.ttl_s:
                cluster = build_cluster(session, include_usage=False)
                self._empty = not cluster.nodes
                self._packer = None if self._empty else self.packer_factory(cluster)
                self._memo.clear()
                self._built_at = time.monotonic()
            if self._empty:
                return None
            if request not in self._memo:
                decision = self._packer.place(request)
                self._memo[request] = decision if isinstance(decision, NoFit) and decision.never else None
            return self._memo[request]


class Admitter:
    """Runs admission cycles on demand (``wake``) and on a timer, in its own thread."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        settings: Settings,
        dispatcher: Dispatcher,
        packer_factory: PackerFactory,
        repartition: Repartitioner | None = None,
    ) -> None:
        self.sessions = sessions
        self.repartition = repartition
        self.settings = settings
        self.dispatcher = dispatcher
        self.packer_factory = packer_factory
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.last_report: CycleReport | None = None
        self.is_postgres = sessions.kw["bind"].dialect.name == "postgresql"

    # -- the loop -------------------------------------------------------
    def wake(self) -> None:
        """Ask for a cycle as soon as possible (coalesced: many wakes, one cycle)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gpuq-admitter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.settings.admission_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                # Recovery first, so a job requeued from a dead node is admitted in this very cycle.
                self.reconcile()
            except Exception:  # noqa: BLE001 - a broken broker or database must not stop admission
                log.exception("reconcile failed; retrying on the next wake")
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the admitter must survive a bad cycle
                log.exception("admission cycle failed; retrying on the next wake")
                time.sleep(0.2)

    # -- one cycle --------------------------------------------------------
    def run_once(self) -> CycleReport:
        """One cycle, under the admission lock."""
        started = time.perf_counter()
        with self._lock:
            session = self.sessions()
            try:
                if self.is_postgres and not session.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY}
                ):
                    session.rollback()
                    return CycleReport(0, 0, time.perf_counter() - started, skipped=True)
                # 1. leases
                node_service.expire_leases(session)
                # 2. snapshot
                snapshot, jobs = self._snapshot(session)
                # 3. decide
                result = run_cycle(snapshot, self.packer_factory, self._hardware_aware(session))
                # 4. persist
                launches, stops = self._persist(session, result, jobs)
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        # 5. dispatch, after the commit: an agent never hears of an uncommitted admission
        if launches:
            self._dispatch(launches)
        for stop in stops:
            self.dispatcher.stop(stop)
        self.cycles += 1
        if result.incomplete:
            self.wake()  # it stopped at its re-carving budget: continue at once
        report = CycleReport(len(result.admitted), len(result.waiting), time.perf_counter() - started)
        self.last_report = report
        return report

    def _hardware_aware(self, session: Session) -> Repartitioner | None:
        """The repartitioner, minus changes real hardware cannot make on its own.

        On GPUs an agent probed through NVML, MIG mode is the driver's (turning
        it on or off needs root and a GPU reset): a MIG-enabled GPU stays MIG
        (its layout may change), any other stays out of MIG. Simulated GPUs
        may take any mode.
        """
        if self.repartition is None:
            return None
        rows = session.execute(
            select(Gpu.uuid, Gpu.mig_enabled).join(Node, Node.id == Gpu.node_id).where(Node.gpu_source == "nvml")
        ).all()
        fixed = {uuid: bool(enabled) for uuid, enabled in rows}
        if not fixed:
            return self.repartition
        inner = self.repartition

        def propose(cluster: ClusterState, requests: list[Request]) -> list:
            return [c for c in inner(cluster, requests)
                    if c.gpu_uuid not in fixed or (c.mode is GpuMode.MIG) == fixed[c.gpu_uuid]]

        return propose

    def _snapshot(self, session: Session) -> tuple[Snapshot, dict[str, Job]]:
        now = utcnow()
        classes = class_service.effective(session, settings=self.settings)
        cluster = build_cluster(session)
        rows = session.execute(
            select(Job, Project.name).join(Project, Project.id == Job.project_id)
            .where(Job.state == JobState.QUEUED, Job.held.is_(False))
        ).all()
        jobs = {job.id: job for job, _ in rows}
        standing = snapshots.fair_share(session, now=now, half_life_s=self.settings.fair_share_half_life_s)
        pending = []
        for job, project in rows:
            klass = classes.get(job.priority_class)
            pending.append(PendingJob(
                job_id=job.id, project=project, request=request_for(job),
                priority=klass.value if klass else job.priority, submitted_at=job.submitted_at,
                priority_override=job.priority_override, time_limit_s=job.time_limit_s,
                fair_share=standing.get(project, 0.0), preemptible=bool(klass and klass.preemptible),
            ))
        snapshot = Snapshot(
            cluster=cluster, pending=tuple(pending), now=now,
            running=tuple(snapshots.running_jobs(session, now=now, classes=classes)),
            quotas=quota_service.all_quotas(session), min_run_s=self.settings.min_run_s,
        )
        return snapshot, jobs

    def _persist(
        self, session: Session, result: CycleResult, jobs: dict[str, Job]
    ) -> tuple[list[LaunchSpec], list[StopRequest]]:
        now = utcnow()
        launches: list[LaunchSpec] = []
        stops: list[StopRequest] = []
        node_names = dict(session.execute(select(Node.id, Node.name)).all())
        for change in result.layout_changes:
            gpu = session.get(Gpu, change.gpu_uuid)
            if gpu is not None:
                log.info("GPU %s: %s -> %s (%s)", gpu.uuid, gpu.mode, change.mode.value, change.reason)
                gpu.mode = change.mode.value
                gpu.mig_layout = [{"profile": p, "start": s, "uuid": None} for p, s in change.mig_layout]
        launches.extend(self._admit(session, result, jobs, node_names, now))
        for preemption in result.preemptions:
            for victim_id in preemption.victims:
                victim = session.get(Job, victim_id, with_for_update=True)
                if victim is None or victim.state not in (JobState.ADMITTED, JobState.RUNNING):
                    continue
                klass = class_service.effective(session, settings=self.settings).get(victim.priority_class)
                grace_s = klass.grace_s if klass else self.settings.default_grace_s
                victim.preemptions += 1
                stops.extend(operator_service.stop_job(
                    session, job=victim, requeue=victim.requeue_on_preempt, grace_s=grace_s,
                    reason=f"preempted by job {preemption.job_id} ({preemption.why})",
                ))
        for job_id, reason in result.waiting.items():
            if jobs[job_id].reason != reason:
                jobs[job_id].reason = reason
        for job_id, reason in result.never.items():
            held = f"cannot run on the current cluster: {reason}"
            if jobs[job_id].reason != held:
                jobs[job_id].reason = held
        session.flush()
        return launches, stops

    def _admit(self, session: Session, result: CycleResult, jobs: dict[str, Job], node_names: dict[str, str],
               now) -> list[LaunchSpec]:  # noqa: ANN001
        """Write the admissions in bulk: one conditional UPDATE, then the attempt and allocation rows."""
        if not result.admitted:
            return []
        claimed: set[str] = set()
        ids = [a.job_id for a in result.admitted]
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            # Conditional: a cancel that committed since the snapshot wins (the job is no longer queued).
            claimed.update(session.scalars(
                update(Job)
                .where(Job.id.in_(chunk), Job.state == JobState.QUEUED)
                .values(state=JobState.ADMITTED, attempt=Job.attempt + 1, admitted_at=now, reason="starting")
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            ).all())
        attempts: list[dict] = []
        allocations: list[dict] = []
        launches: list[LaunchSpec] = []
        for admission in result.admitted:
            if admission.job_id not in claimed:
                continue
            job = jobs[admission.job_id]
            number = job.attempt + 1
            attempts.append({"id": new_id(), "job_id": job.id, "number": number, "created_at": now,
                             "node_id": admission.placement.replicas[0].node_id, "launch_sent_at": now, "exits": {}})
            for replica, member in enumerate(admission.placement.replicas):
                rows = [
                    Allocation(
                        id=new_id(), job_id=job.id, attempt=number, replica=replica, node_id=member.node_id,
                        kind=s.kind.value, gpu_uuid=s.gpu_uuid, slot=s.slot, blocks=s.blocks,
                        gpu_memory_mib=s.memory_mib, mig_profile=s.mig_profile, mig_start=s.mig_start,
                        mig_uuid=s.mig_uuid, cpus_milli=0, memory_mib=0, created_at=now,
                    )
                    for s in member.slices
                ] or [Allocation(id=new_id(), job_id=job.id, attempt=number, replica=replica, node_id=member.node_id,
                                 kind="cpu", slot="", blocks=0, gpu_memory_mib=0, cpus_milli=0, memory_mib=0,
                                 created_at=now)]
                rows[0].cpus_milli, rows[0].memory_mib = member.cpus_milli, member.memory_mib
                for s in member.slices:
                    if s.kind.value == "mig" and s.mig_uuid is None:
                        self._record_instance(session, s)
                allocations.extend({c: getattr(r, c) for c in ALLOCATION_COLUMNS} for r in rows)
                launches.append(self.launch_spec(job, number, replica, node_names[member.node_id], rows))
        if attempts:
            session.execute(insert(Attempt), attempts)
            # The partial unique index refuses a slice held twice: the whole cycle rolls back.
            session.execute(insert(Allocation), allocations)
        return launches

    @staticmethod
    def _record_instance(session: Session, s) -> None:  # noqa: ANN001 - a partitioner Slice
        """A placement that creates a MIG instance adds it to the GPU's layout (the agent carves it)."""
        gpu = session.get(Gpu, s.gpu_uuid)
        if gpu is not None and all(m["start"] != s.mig_start for m in gpu.mig_layout or []):
            gpu.mig_layout = [*(gpu.mig_layout or []), {"profile": s.mig_profile, "start": s.mig_start, "uuid": None}]

    def launch_spec(self, job: Job, attempt: int, replica: int, node_name: str, rows: list[Allocation]) -> LaunchSpec:
        """What the agent needs to run one replica of one attempt."""
        klass = self.settings.priority_classes.get(job.priority_class)
        grace_s = klass.grace_s if klass else self.settings.default_grace_s
        blocks_row = next((r for r in rows if r.kind == "blocks"), None)
        env = dict(job.env)  # the runtimes add GPUQ_* and the device / MPS variables
        gpu_rows = [r for r in rows if r.gpu_uuid]
        mig_slices = [
            {"index": i, "gpu_uuid": r.gpu_uuid, "profile": r.mig_profile, "start": r.mig_start}
            for i, r in enumerate(gpu_rows) if r.kind == "mig" and r.mig_uuid is None
        ]
        return LaunchSpec(
            job_id=job.id, attempt=attempt, node_name=node_name, command=list(job.command), image=job.image,
            env=env, gpu_uuids=[r.mig_uuid or r.gpu_uuid for r in gpu_rows], mig_slices=mig_slices,
            blocks=blocks_row.blocks if blocks_row else None,
            gpu_memory_mib=blocks_row.gpu_memory_mib if blocks_row else None,
            cpus=job.cpus or None, memory_mib=job.memory_mib or None, time_limit_s=job.time_limit_s,
            grace_s=grace_s, replica=replica, replicas=job.replicas,
        )

    def _dispatch(self, launches: list[LaunchSpec]) -> None:
        for spec in launches:
            self.dispatcher.launch(spec)

    # -- reconciliation -----------------------------------------------------
    def reconcile(self) -> int:
        """Recover lost nodes, then re-send launches and stops the database says are outstanding.

        1. nodes whose lease expired (database clock) are marked down and their
           attempts lost: requeued, or failed after ``max_retries`` (``recovery``);
        2. admitted attempts whose launch was sent more than ``resend_after_s``
           ago get it again (a flushed or restarted Redis delays, never loses);
        3. stops of cancelled running jobs likewise.
        Returns how many commands were sent.
        """
        from queue_service.recovery import expire

        settings = self.settings
        launches: list[LaunchSpec] = []
        stops: list[StopRequest] = []
        session = self.sessions()
        try:
            if self.is_postgres and not session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY + 1}
            ):
                session.rollback()
                return 0  # another replica reconciles right now
            recovered = expire(session, max_retries=settings.max_retries, grace_s=settings.default_grace_s)
            stops += recovered.stops
            now = node_service.db_now(session)
            cutoff = now - timedelta(seconds=settings.resend_after_s)
            node_names = dict(session.execute(select(Node.id, Node.name)).all())
            waiting = session.execute(
                select(Job, Attempt)
                .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
                .where(Job.state == JobState.ADMITTED, Attempt.launch_sent_at < cutoff)
            ).all()
            for job, attempt in waiting:
                rows = session.scalars(
                    select(Allocation).where(Allocation.job_id == job.id, Allocation.attempt == job.attempt)
                ).all()
                for replica in sorted({r.replica for r in rows}):
                    mine = [r for r in rows if r.replica == replica]
                    if str(replica) not in (attempt.exits or {}):
                        launches.append(self.launch_spec(job, job.attempt, replica, node_names[mine[0].node_id], mine))
                attempt.launch_sent_at = now
            stopping = session.execute(
                select(Job, Attempt)
                .join(Attempt, (Attempt.job_id == Job.id) & (Attempt.number == Job.attempt))
                .where(Job.state == JobState.RUNNING, Job.cancel_requested.is_(True), Attempt.stop_sent_at < cutoff)
            ).all()
            for job, attempt in stopping:
                nodes = session.scalars(
                    select(Allocation.node_id).where(Allocation.job_id == job.id, Allocation.attempt == job.attempt)
                ).all()
                for node_id in sorted(set(nodes)):
                    stops.append(StopRequest(job.id, job.attempt, node_names[node_id], settings.default_grace_s))
                attempt.stop_sent_at = now
            session.commit()
        finally:
            session.close()
        for spec in launches:
            self.dispatcher.launch(spec)
        for stop in stops:
            self.dispatcher.stop(stop)
        if recovered.requeued or recovered.failed:
            self.wake()
        return len(launches) + len(stops)

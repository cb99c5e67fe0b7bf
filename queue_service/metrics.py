"""Prometheus metrics, read from the database at scrape time (and one admitter hook).

Why at scrape time: several API replicas serve one database, and whichever
replica Prometheus scrapes must tell the same story; counters kept in one
process's memory would not. Counters derived from rows that are only ever
added (attempts, ledger intervals) are monotonic, as Prometheus expects.
The one in-process measurement is the admission cycle's duration, taken
by wrapping ``Admitter.run_once`` (the leader's replica reports it).

    gpuq_queue_wait_seconds{project,priority_class}          histogram, submit -> admit
    gpuq_jobs{state}                                         gauge
    gpuq_admissions_total{project}                           counter (attempts made)
    gpuq_preemptions_total{project}                          counter (attempts ended by preemption)
    gpuq_admission_cycle_duration_seconds                    histogram
    gpuq_gpu_allocated_ratio{node,gpu,model}                 gauge, share of the GPU held
    gpuq_gpu_busy_ratio{node,gpu,model}                      gauge, SM busy (latest samples)
    gpuq_project_allocated_gpus{project}                     gauge, GPU-equivalents held
    gpuq_project_busy_ratio{project}                         gauge, busy / sampled
    gpuq_usage_gpu_equivalent_seconds_total{project}         counter, from the ledger
    gpuq_usage_cost_total{project}                           counter, from the ledger and prices
    gpuq_node_drained{node}                                  gauge, 1 while gpuq drained it for its launch failures
    gpuq_fair_share_standing{project,charge}                 gauge, charged usage per weight (lower runs first)
    gpuq_fair_share_factor{project,charge}                   gauge, 2^(-effective usage / norm share), as sshare
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from functools import wraps

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from queue_service.billing.ledger import db_now, gpu_equivalents
from queue_service.billing.prices import PriceBook
from queue_service.db.billing_models import GpuSample, UsageInterval
from queue_service.db.models import Allocation, Attempt, Gpu, Job, JobState, Node, Project
from queue_service.services import share as share_service
from queue_service.settings import Settings
from queue_service.snapshots import allocation_equivalents

__all__ = ["WAIT_BUCKETS_S", "ServiceCollector", "build_registry"]

WAIT_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
CYCLE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServiceCollector(Collector):
    """Every database-derived metric, computed in one short read-only session per scrape."""

    def __init__(self, sessions: sessionmaker[Session], *, busy_window_s: float = 120.0) -> None:
        self.sessions = sessions
        self.busy_window_s = busy_window_s

    def collect(self) -> Iterator:
        with self.sessions() as session:
            yield from self._queue(session)
            yield from self._gpus(session)
            yield from self._drained(session)
            yield from self._usage(session)

    def _queue(self, session: Session) -> Iterator:
        waits: dict[tuple[str, str], list[float]] = defaultdict(list)
        for project, klass, submitted, admitted in session.execute(
            select(Project.name, Job.priority_class, Job.submitted_at, Job.admitted_at)
            .join(Project, Project.id == Job.project_id).where(Job.admitted_at.is_not(None))
        ):
            if admitted is not None:  # the query's filter, for the type checker
                waits[(project, klass)].append(max(0.0, (admitted - submitted).total_seconds()))
        hist = HistogramMetricFamily("gpuq_queue_wait_seconds", "Time from submit to (latest) admission",
                                     labels=["project", "priority_class"])
        for (project, klass), values in sorted(waits.items()):
            buckets = [(str(b), sum(1 for v in values if v <= b)) for b in WAIT_BUCKETS_S]
            buckets.append(("+Inf", len(values)))
            hist.add_metric([project, klass], buckets, sum(values))
        yield hist

        states = GaugeMetricFamily("gpuq_jobs", "Jobs by state", labels=["state"])
        counts = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        for state in JobState:
            states.add_metric([state.value], counts.get(state.value, 0))
        yield states

        admissions = CounterMetricFamily("gpuq_admissions", "Attempts admitted", labels=["project"])
        preemptions = CounterMetricFamily("gpuq_preemptions", "Attempts ended by preemption", labels=["project"])
        rows = session.execute(
            select(Project.name, func.count(), func.sum(_preempted()))
            .select_from(Attempt).join(Job, Job.id == Attempt.job_id).join(Project, Project.id == Job.project_id)
            .group_by(Project.name)
        ).all()
        for project, made, preempted in rows:
            admissions.add_metric([project], made)
            preemptions.add_metric([project], preempted or 0)
        yield admissions
        yield preemptions

    def _drained(self, session: Session) -> Iterator:
        gauge = GaugeMetricFamily("gpuq_node_drained", "1 while gpuq drained the node for failing launches itself",
                                  labels=["node"])
        for (name,) in session.execute(select(Node.name).where(Node.status == "draining", Node.drain_reason != "")):
            gauge.add_metric([name], 1.0)
        yield gauge

    def _gpus(self, session: Session) -> Iterator:
        gpus = session.execute(
            select(Gpu.uuid, Gpu.model, Node.name).join(Node, Node.id == Gpu.node_id).where(Gpu.present.is_(True))
        ).all()
        held: dict[str, float] = defaultdict(float)
        project_held: dict[str, float] = defaultdict(float)
        mig_owner: dict[str, str] = {}
        for alloc, model, project in session.execute(
            select(Allocation, Gpu.model, Project.name).join(Job, Job.id == Allocation.job_id)
            .join(Project, Project.id == Job.project_id).outerjoin(Gpu, Gpu.uuid == Allocation.gpu_uuid)
            .where(Allocation.released_at.is_(None), Allocation.gpu_uuid.is_not(None))
        ):
            gpu_uuid = alloc.gpu_uuid
            if gpu_uuid is None:  # the query's filter, for the type checker
                continue
            part = allocation_equivalents(alloc, model)  # the quota and billing unit: a share of the GPU
            held[gpu_uuid] += part
            project_held[project] += part
            if alloc.mig_uuid:
                mig_owner[alloc.mig_uuid] = gpu_uuid
        since = db_now(session) - timedelta(seconds=self.busy_window_s)
        busy: dict[str, float] = defaultdict(float)
        latest: dict[tuple[str, str], tuple] = {}
        for job_id, uuid, at, sm in session.execute(
            select(GpuSample.job_id, GpuSample.gpu_uuid, GpuSample.at, GpuSample.sm_percent)
            .where(GpuSample.at >= since, GpuSample.sm_percent.is_not(None))
        ):
            if (job_id, uuid) not in latest or latest[(job_id, uuid)][0] < at:
                latest[(job_id, uuid)] = (at, sm)
        for (_job, uuid), (_at, sm) in latest.items():
            busy[mig_owner.get(uuid, uuid)] += sm / 100
        allocated = GaugeMetricFamily("gpuq_gpu_allocated_ratio", "Share of the GPU held by jobs",
                                      labels=["node", "gpu", "model"])
        busy_g = GaugeMetricFamily("gpuq_gpu_busy_ratio", "SM busy share of the GPU (latest samples)",
                                   labels=["node", "gpu", "model"])
        for uuid, model, node in gpus:
            allocated.add_metric([node, uuid, model], min(1.0, held.get(uuid, 0.0)))
            busy_g.add_metric([node, uuid, model], min(1.0, busy.get(uuid, 0.0)))
        yield allocated
        yield busy_g
        per_project = GaugeMetricFamily("gpuq_project_allocated_gpus", "GPU-equivalents held now",
                                        labels=["project"])
        for project, value in sorted(project_held.items()):
            per_project.add_metric([project], value)
        yield per_project

    def _usage(self, session: Session) -> Iterator:
        now = db_now(session)
        prices = PriceBook.load(session)
        seconds: dict[str, float] = defaultdict(float)
        cost: dict[str, float] = defaultdict(float)
        for iv in session.scalars(select(UsageInterval)):
            end = iv.ended_at or max(now, iv.started_at)
            seconds[iv.project_name] += gpu_equivalents(iv) * (end - iv.started_at).total_seconds()
            cost[iv.project_name] += prices.cost(iv, iv.started_at, end)
        gpu_s = CounterMetricFamily("gpuq_usage_gpu_equivalent_seconds", "GPU-equivalent seconds billed",
                                    labels=["project"])
        cost_c = CounterMetricFamily("gpuq_usage_cost", "Cost billed (catalogue currency)", labels=["project"])
        for project in sorted(seconds):
            gpu_s.add_metric([project], seconds[project])
            cost_c.add_metric([project], cost[project])
        yield gpu_s
        yield cost_c

        sampled: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for project, window_s, sm in session.execute(
            select(Project.name, GpuSample.window_s, GpuSample.sm_percent)
            .join(Project, Project.id == GpuSample.project_id).where(GpuSample.sm_percent.is_not(None))
        ):
            if sm is not None:  # the query's filter, for the type checker
                sampled[project][0] += window_s
                sampled[project][1] += window_s * sm / 100
        ratio = GaugeMetricFamily("gpuq_project_busy_ratio", "SM-busy GPU-time / sampled GPU-time",
                                  labels=["project"])
        for project, (total, busy) in sorted(sampled.items()):
            ratio.add_metric([project], busy / total if total else 0.0)
        yield ratio


def _preempted():
    """1 for an attempt that a preemption ended (its reason says so), else 0."""
    return case((Attempt.reason.like("%preempt%"), 1), else_=0)


# -- fair-share standing (issue 13: measured use fed back; services.share, as gpuq share shows it) --
class FairShareCollector(Collector):
    """Each project's fair-share standing and factor, in the configured charge mode (one usage query)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings

    def collect(self) -> Iterator:
        with self.sessions() as session:
            yield from fair_share_metrics(session, settings=self.settings)


def fair_share_metrics(session: Session, *, settings: Settings) -> Iterator:
    report = share_service.standing(session, settings=settings, both=False)
    standing = GaugeMetricFamily("gpuq_fair_share_standing", "Charged decayed GPU-equivalent seconds per unit "
                                 "of weight (lower runs first among equal priorities)", labels=["project", "charge"])
    factor = GaugeMetricFamily("gpuq_fair_share_factor", "2^(-effective usage / norm share): 1 unused, "
                               "0.5 at its share (Slurm sshare FairShare)", labels=["project", "charge"])
    for row in report.rows:
        standing.add_metric([row.project, report.charge], row.standing)
        factor.add_metric([row.project, report.charge], row.fair_share)
    yield standing
    yield factor


def build_registry(ctx) -> CollectorRegistry:  # ctx: a ServiceContext (not imported: an import cycle)
    """A registry for one app: the database collector plus the admission-cycle histogram hook."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(ctx.sessions))
    registry.register(FairShareCollector(ctx.sessions, ctx.settings))
    cycle = Histogram("gpuq_admission_cycle_duration_seconds", "Duration of one admission cycle",
                      buckets=CYCLE_BUCKETS_S, registry=registry)
    admitter = ctx.admitter
    if not getattr(admitter, "_gpuq_metrics_hooked", False):
        inner = admitter.run_once

        @wraps(inner)
        def run_once(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                cycle.observe(time.perf_counter() - started)

        admitter.run_once = run_once
        admitter._gpuq_metrics_hooked = True
    return registry

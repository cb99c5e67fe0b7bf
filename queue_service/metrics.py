"""Prometheus metrics, read from the database at scrape time (and one admitter hook).

Why at scrape time: several API replicas serve one database, and whichever
replica Prometheus scrapes must tell the same story; counters kept in one
process's memory would not. Counters derived from rows that are only ever
added (attempts, ledger intervals) are monotonic, as Prometheus expects.
The one in-process measurement is the admission cycle's duration, taken
by wrapping ``Admitter.run_once`` (the leader's replica reports it).

Cost per scrape: aggregate queries only, no Python loop over jobs or
intervals. Job figures are ``GROUP BY`` queries over the jobs (waits and
completion times bucketed in SQL): the live jobs every scrape, the final
ones once (a final job never changes) and then only those made final since
the last scrape (job events past the last id seen); usage counters are the rollups
(``billing.rollups``) summed per project plus the open intervals priced up
to now; live GPU figures read only live allocations and the last
``busy_window_s`` of samples.

Label cardinality, bounded: projects, priority classes, workload classes,
job states and nodes/GPUs are configured sets; no metric is labelled by
job. Cost by label is off by default: only keys in
``GPUQ_METRICS_LABEL_KEYS`` (comma-separated) are broken down, each into at
most ``GPUQ_METRICS_LABEL_VALUES_MAX`` values (the largest by cost; the
rest summed as ``(other)``; jobs without the key as ``(none)``).

    gpuq_queue_wait_seconds{project,priority_class,workload} histogram, submit -> (latest) admit
    gpuq_job_completion_seconds{workload,state}              histogram, submit -> finish of final jobs (p50/p99)
    gpuq_jobs{state}                                         gauge
    gpuq_admissions_total{project}                           counter (attempts made: the jobs' attempt numbers)
    gpuq_preemptions_total{project}                          counter (preemptions: the lifecycle's stop events
                                                             with cause preempt, counted on the job)
    gpuq_admission_cycle_duration_seconds                    histogram
    gpuq_gpu_allocated_ratio{node,gpu,model}                 gauge, share of the GPU held
    gpuq_gpu_busy_ratio{node,gpu,model}                      gauge, SM busy (latest samples)
    gpuq_gpu_memory_used_ratio{node,gpu,model}               gauge, NVML memory used / GPU memory (latest samples)
    gpuq_project_allocated_gpus{project}                     gauge, GPU-equivalents held
    gpuq_project_busy_ratio{project}                         gauge, busy / sampled
    gpuq_project_gpu_memory_used_mib{project}                gauge, NVML memory used now (latest samples)
    gpuq_project_gpu_memory_used_ratio{project}              gauge, that / GPU memory its live allocations hold
    gpuq_usage_gpu_equivalent_seconds_total{project}         counter, from the ledger
    gpuq_usage_cost_total{project}                           counter, from the ledger and prices
    gpuq_usage_cost_by_label_total{key,value}                counter, cost by job label (allow-listed keys)
    gpuq_node_drained{node}                                  gauge, 1 while gpuq drained it for its launch failures
    gpuq_fair_share_standing{project,charge}                 gauge, charged usage per weight (lower runs first)
    gpuq_fair_share_factor{project,charge}                   gauge, 2^(-effective usage / norm share), as sshare
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from functools import wraps
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from queue_service.billing import rollups
from queue_service.billing.ledger import db_now, gpu_equivalents
from queue_service.billing.pricebook import PriceBook
from queue_service.billing.reports import label_value
from queue_service.db.billing_models import GpuSample, UsageInterval
from queue_service.db.models import Allocation, Gpu, Job, JobEvent, JobState, Node, Project
from queue_service.lifecycle.states import FINAL_STATES
from queue_service.services import share as share_service
from queue_service.settings import Settings
from queue_service.snapshots import allocation_equivalents

__all__ = ["COMPLETION_BUCKETS_S", "WAIT_BUCKETS_S", "ServiceCollector", "build_registry"]

WAIT_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
COMPLETION_BUCKETS_S = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600)
FINAL = sorted(FINAL_STATES)
NOT_FINAL = sorted(set(JobState) - FINAL_STATES)  # an IN list the state index answers
FINALS_REFRESH_S = 600.0  # the final jobs are summed again from scratch this often
OTHER_VALUES = "(other)"  # label values past GPUQ_METRICS_LABEL_VALUES_MAX, summed
CYCLE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServiceCollector(Collector):
    """Every database-derived metric, computed in one short read-only session per scrape."""

    def __init__(self, sessions: sessionmaker[Session], *, busy_window_s: float = 120.0,
                 label_keys: str | Iterable[str] = "", label_values_max: int = 20) -> None:
        self.sessions = sessions
        self.busy_window_s = busy_window_s
        keys = label_keys.split(",") if isinstance(label_keys, str) else label_keys
        self.label_keys = sorted({k.strip() for k in keys if k.strip()})
        self.label_values_max = label_values_max
        self._lock = threading.Lock()
        self._final_mark: int | None = None  # the last job event whose final jobs are in _final_sums
        self._final_sums: dict[tuple[str, str, str, str], list[float]] = {}
        self._final_at = time.monotonic()

    def collect(self) -> Iterator:
        with self.sessions() as session:
            yield from self._queue(session)
            yield from self._gpus(session)
            yield from self._drained(session)
            yield from self._usage(session)

    def _queue(self, session: Session) -> Iterator:
        """Waits, completion times, states and preemptions: one aggregate query over the jobs."""
        dialect = session.get_bind().dialect.name
        wait = _seconds(dialect, Job.submitted_at, Job.admitted_at)
        took = _seconds(dialect, Job.submitted_at, Job.finished_at)
        admitted = Job.admitted_at.is_not(None)
        final = Job.finished_at.is_not(None)
        columns = [func.count(), func.sum(Job.preemptions), func.sum(Job.attempt),
                   func.sum(case((admitted, 1), else_=0)), func.sum(case((admitted, wait), else_=0.0)),
                   *[func.sum(case((admitted & (wait <= b), 1), else_=0)) for b in WAIT_BUCKETS_S],
                   func.sum(case((final, 1), else_=0)), func.sum(case((final, took), else_=0.0)),
                   *[func.sum(case((final & (took <= b), 1), else_=0)) for b in COMPLETION_BUCKETS_S]]
        dims = (Job.project_id, Job.priority_class, Job.workload, Job.state)

        def aggregate(*where) -> list[tuple]:
            return [tuple(r) for r in session.execute(select(*dims, *columns).where(*where).group_by(*dims))]

        rows = [*aggregate(Job.state.in_(NOT_FINAL)), *self._finals(session, aggregate)]
        names = dict(session.execute(select(Project.id, Project.name)).all())
        n_wait = len(WAIT_BUCKETS_S)
        waits: dict[tuple[str, str, str], list[float]] = {}
        completions: dict[tuple[str, str], list[float]] = {}
        states: dict[str, int] = defaultdict(int)
        preempted: dict[str, int] = defaultdict(int)
        made: dict[str, int] = defaultdict(int)
        for project_id, klass, workload, state, count, preemptions, attempts, *sums in rows:
            project = names.get(project_id, project_id)
            states[state] += count
            preempted[project] += preemptions or 0
            made[project] += attempts or 0
            w = waits.setdefault((project, klass, workload), [0.0] * (n_wait + 2))
            c = completions.setdefault((workload, state), [0.0] * (len(COMPLETION_BUCKETS_S) + 2))
            for target, values in ((w, sums[:n_wait + 2]), (c, sums[n_wait + 2:])):
                for k, v in enumerate(values):
                    target[k] += v or 0
        hist = HistogramMetricFamily("gpuq_queue_wait_seconds", "Time from submit to (latest) admission",
                                     labels=["project", "priority_class", "workload"])
        for labels, (n, total, *buckets) in sorted(waits.items()):
            if n:
                hist.add_metric(list(labels), _buckets(WAIT_BUCKETS_S, buckets, n), total)
        yield hist
        done = HistogramMetricFamily("gpuq_job_completion_seconds", "Time from submit to finish of final jobs",
                                     labels=["workload", "state"])
        for done_labels, (n, total, *buckets) in sorted(completions.items()):
            if n:
                done.add_metric(list(done_labels), _buckets(COMPLETION_BUCKETS_S, buckets, n), total)
        yield done

        gauge = GaugeMetricFamily("gpuq_jobs", "Jobs by state", labels=["state"])
        for state in JobState:
            gauge.add_metric([state.value], states.get(state.value, 0))
        yield gauge

        admissions = CounterMetricFamily("gpuq_admissions", "Attempts admitted", labels=["project"])
        for project, count in sorted(made.items()):
            if count:
                admissions.add_metric([project], count)  # a job's attempt number: the attempts it was admitted
        yield admissions
        preemptions = CounterMetricFamily("gpuq_preemptions", "Preemptions of the project's jobs",
                                          labels=["project"])
        for project, count in sorted(preempted.items()):
            preemptions.add_metric([project], count)
        yield preemptions

    def _finals(self, session: Session, aggregate: Callable[..., list[tuple]]) -> list[tuple]:
        """The final jobs' sums: a final job never changes, so they are summed once and then only the jobs
        made final since (their final event's id past the last one seen); every replica derives the same."""
        made_final = select(JobEvent.job_id).where(JobEvent.to_state.in_(FINAL))
        with self._lock:
            mark = session.scalar(select(func.max(JobEvent.id))) or 0
            if time.monotonic() - self._final_at > FINALS_REFRESH_S:  # heals an event id committed out of order
                self._final_mark, self._final_sums, self._final_at = None, {}, time.monotonic()
            if self._final_mark is None:
                fresh = aggregate(Job.state.in_(FINAL), Job.id.not_in(made_final.where(JobEvent.id > mark)))
            elif mark > self._final_mark:
                fresh = aggregate(Job.state.in_(FINAL), Job.id.in_(
                    made_final.where(JobEvent.id > self._final_mark, JobEvent.id <= mark)))
            else:
                fresh = []
            self._final_mark = mark
            for project_id, klass, workload, state, *sums in fresh:
                known = self._final_sums.setdefault((project_id, klass, workload, state), [0.0] * len(sums))
                for k, v in enumerate(sums):
                    known[k] += v or 0
            return [(*key, *sums) for key, sums in self._final_sums.items()]

    def _drained(self, session: Session) -> Iterator:
        gauge = GaugeMetricFamily("gpuq_node_drained", "1 while gpuq drained the node for failing launches itself",
                                  labels=["node"])
        for (name,) in session.execute(select(Node.name).where(Node.status == "draining", Node.drain_reason != "")):
            gauge.add_metric([name], 1.0)
        yield gauge

    def _gpus(self, session: Session) -> Iterator:
        gpus = session.execute(
            select(Gpu.uuid, Gpu.model, Node.name, Gpu.memory_mib).join(Node, Node.id == Gpu.node_id)
            .where(Gpu.present.is_(True))
        ).all()
        memory_of = {uuid: memory for uuid, _model, _node, memory in gpus}
        held: dict[str, float] = defaultdict(float)
        project_held: dict[str, float] = defaultdict(float)
        project_memory: dict[str, float] = defaultdict(float)  # GPU memory its live allocations hold
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
            project_memory[project] += alloc.gpu_memory_mib or (memory_of.get(gpu_uuid, 0) * part)
            if alloc.mig_uuid:
                mig_owner[alloc.mig_uuid] = gpu_uuid
        since = db_now(session) - timedelta(seconds=self.busy_window_s)
        busy: dict[str, float] = defaultdict(float)
        used: dict[str, float] = defaultdict(float)
        project_used: dict[str, float] = defaultdict(float)
        latest: dict[tuple[str, str], tuple] = {}
        for job_id, project_id, uuid, at, sm, memory in session.execute(
            select(GpuSample.job_id, GpuSample.project_id, GpuSample.gpu_uuid, GpuSample.at, GpuSample.sm_percent,
                   GpuSample.memory_used_mib).where(GpuSample.at >= since)
        ):
            if (job_id, uuid) not in latest or latest[(job_id, uuid)][0] < at:
                latest[(job_id, uuid)] = (at, sm, memory, project_id)
        names = dict(session.execute(select(Project.id, Project.name)).all()) if latest else {}
        for (_job, uuid), (_at, sm, memory, project_id) in latest.items():
            gpu = mig_owner.get(uuid, uuid)
            if sm is not None:
                busy[gpu] += sm / 100
            used[gpu] += memory or 0
            project_used[names.get(project_id, project_id)] += memory or 0
        allocated = GaugeMetricFamily("gpuq_gpu_allocated_ratio", "Share of the GPU held by jobs",
                                      labels=["node", "gpu", "model"])
        busy_g = GaugeMetricFamily("gpuq_gpu_busy_ratio", "SM busy share of the GPU (latest samples)",
                                   labels=["node", "gpu", "model"])
        memory_g = GaugeMetricFamily("gpuq_gpu_memory_used_ratio", "GPU memory used / GPU memory (latest samples)",
                                     labels=["node", "gpu", "model"])
        for uuid, model, node, memory_mib in gpus:
            allocated.add_metric([node, uuid, model], min(1.0, held.get(uuid, 0.0)))
            busy_g.add_metric([node, uuid, model], min(1.0, busy.get(uuid, 0.0)))
            memory_g.add_metric([node, uuid, model], min(1.0, used.get(uuid, 0.0) / memory_mib) if memory_mib else 0.0)
        yield allocated
        yield busy_g
        yield memory_g
        per_project = GaugeMetricFamily("gpuq_project_allocated_gpus", "GPU-equivalents held now",
                                        labels=["project"])
        for project, value in sorted(project_held.items()):
            per_project.add_metric([project], value)
        yield per_project
        used_mib = GaugeMetricFamily("gpuq_project_gpu_memory_used_mib", "GPU memory the project's jobs use now "
                                     "(latest samples)", labels=["project"])
        used_ratio = GaugeMetricFamily("gpuq_project_gpu_memory_used_ratio", "GPU memory used / GPU memory its "
                                       "live allocations hold", labels=["project"])
        for project in sorted(set(project_held) | set(project_used)):
            used_mib.add_metric([project], project_used.get(project, 0.0))
            held_mib = project_memory.get(project, 0.0)
            used_ratio.add_metric([project], project_used.get(project, 0.0) / held_mib if held_mib else 0.0)
        yield used_mib
        yield used_ratio

    def _usage(self, session: Session) -> Iterator:
        """Ledger counters: the rollups summed per project, plus the open intervals priced up to now."""
        now = db_now(session)
        names = dict(session.execute(select(Project.id, Project.name)).all())
        seconds: dict[str, float] = defaultdict(float)
        cost: dict[str, float] = defaultdict(float)
        by_labels: dict[str, float] = defaultdict(float)  # labels JSON -> cost
        r = rollups.rollup_rows().c  # the summed rows and the deltas not folded yet
        for project_id, held_s, spent in session.execute(
            select(r.project_id, func.sum(r.gpu_equivalent_seconds), func.sum(r.cost)).group_by(r.project_id)
        ):
            seconds[names.get(project_id, project_id)] += held_s or 0.0
            cost[names.get(project_id, project_id)] += spent or 0.0
        if self.label_keys:
            for labels_json, spent in session.execute(
                select(r.labels_json, func.sum(r.cost)).group_by(r.labels_json)
            ):
                by_labels[labels_json] += spent or 0.0
        prices: PriceBook | None = None
        for iv in session.scalars(select(UsageInterval).where(UsageInterval.ended_at.is_(None))):
            prices = prices or PriceBook.load(session)
            end = max(now, iv.started_at)
            project = names.get(iv.project_id, iv.project_name)
            seconds[project] += gpu_equivalents(iv) * (end - iv.started_at).total_seconds()
            spent = prices.cost(iv, iv.started_at, end)
            cost[project] += spent
            by_labels[iv.labels_json] += spent
        gpu_s = CounterMetricFamily("gpuq_usage_gpu_equivalent_seconds", "GPU-equivalent seconds billed",
                                    labels=["project"])
        cost_c = CounterMetricFamily("gpuq_usage_cost", "Cost billed (catalogue currency)", labels=["project"])
        for project in sorted(seconds):
            gpu_s.add_metric([project], seconds[project])
            cost_c.add_metric([project], cost[project])
        yield gpu_s
        yield cost_c
        by_label = CounterMetricFamily("gpuq_usage_cost_by_label", "Cost billed by job label (allow-listed keys "
                                       "only, GPUQ_METRICS_LABEL_KEYS)", labels=["key", "value"])
        for key in self.label_keys:
            values: dict[str, float] = defaultdict(float)
            for labels_json, spent in by_labels.items():
                values[label_value(labels_json, key)] += spent
            ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
            shown, rest = ranked[:self.label_values_max], ranked[self.label_values_max:]
            for value, spent in sorted(shown):
                by_label.add_metric([key, value], spent)
            if rest:
                by_label.add_metric([key, OTHER_VALUES], sum(v for _, v in rest))
        yield by_label

        ratio = GaugeMetricFamily("gpuq_project_busy_ratio", "SM-busy GPU-time / sampled GPU-time",
                                  labels=["project"])
        for project_id, total, busy in session.execute(
            select(GpuSample.project_id, func.sum(GpuSample.window_s),
                   func.sum(GpuSample.window_s * GpuSample.sm_percent / 100))
            .where(GpuSample.sm_percent.is_not(None)).group_by(GpuSample.project_id)
        ):
            ratio.add_metric([names.get(project_id, project_id)], (busy or 0.0) / total if total else 0.0)
        yield ratio


def _seconds(dialect: str, start, end):
    """``end - start`` in seconds, in SQL, never negative (SQLite has no interval type: Julian days)."""
    diff: Any
    if dialect == "postgresql":
        diff = func.extract("epoch", end - start)
    else:
        diff = func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)  # float days: to the ms
    return case((diff < 0, 0.0), else_=diff)


def _buckets(bounds: tuple[float, ...], counts: list[float], n: float) -> list[tuple[str, float]]:
    return [*((str(b), c) for b, c in zip(bounds, counts, strict=True)), ("+Inf", n)]


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
    registry.register(ServiceCollector(ctx.sessions, label_keys=ctx.settings.metrics_label_keys,
                                       label_values_max=ctx.settings.metrics_label_values_max))
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

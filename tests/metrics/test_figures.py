"""The figures on the wall (/metrics): waits by workload, completion times, preemptions, GPU memory, cost by label.

In process, on SQLite: rows written directly, the collector scraped through a Prometheus registry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from queue_service.billing import ledger, rollups
from queue_service.db.billing_models import GpuPrice, GpuSample, UsageInterval
from queue_service.db.models import Allocation, Base, Gpu, Job, JobEvent, Node, Project
from queue_service.metrics import ServiceCollector

T0 = datetime(2026, 11, 2, 8)


def _samples(sessions, **kw) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(sessions, **kw))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _world() -> sessionmaker[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)
    with sessions() as session, session.begin():
        session.add_all([Project(id="pa", name="alpha"), Project(id="pb", name="beta"), Node(id="n1", name="n1")])
        session.add(Gpu(uuid="g0", node_id="n1", index=0, name="H100", model="h100-80gb", memory_mib=80000))
        session.add(GpuPrice(gpu_model="h100-80gb", effective_from=T0 - timedelta(days=1), gpu_hour=2.0))
        session.flush()
        jobs = [
            # project, workload, wait s, run s (None: still running), preemptions, labels
            ("pa", "training", 30, 3000, 2, {"feature": "search"}),
            ("pa", "training", 400, 600, 0, {"feature": "ads"}),
            ("pb", "inference", 2, None, 1, {}),
        ]
        for i, (project, workload, wait_s, run_s, preempted, labels) in enumerate(jobs):
            admitted = T0 + timedelta(seconds=wait_s)
            done = admitted + timedelta(seconds=run_s) if run_s is not None else None
            session.add(Job(id=f"j{i}", name=f"j{i}", project_id=project, command=["x"], priority_class="normal",
                            priority=500, workload=workload, labels=labels, submitted_at=T0, admitted_at=admitted,
                            finished_at=done, state="succeeded" if done else "running", preemptions=preempted,
                            attempt=1))
            session.add(Allocation(id=f"a{i}", job_id=f"j{i}", attempt=1, node_id="n1", kind="blocks",
                                   gpu_uuid="g0", slot=f"s{i}", blocks=25, gpu_memory_mib=20000))
            session.add(UsageInterval(
                allocation_id=f"a{i}", job_id=f"j{i}", attempt=1, project_id=project,
                project_name={"pa": "alpha", "pb": "beta"}[project], node_id="n1", node_name="n1", kind="blocks",
                gpu_uuid="g0", gpu_model="h100-80gb", blocks=25, gpu_memory_mib=20000, started_at=admitted,
                workload=workload, labels_json=rollups.labels_key(labels)))
            session.flush()
            if done is not None:
                ledger.close_intervals(session, allocation_ids=[f"a{i}"], at=done)
                session.get(Allocation, f"a{i}").released_at = done
        session.add(GpuSample(job_id="j2", attempt=1, project_id="pb", node_id="n1", gpu_uuid="g0",
                              at=datetime.utcnow(), window_s=10, sm_percent=50, memory_used_mib=8000))
    return sessions


def test_figures() -> None:
    sessions = _world()
    m = _samples(sessions, label_keys="feature", label_values_max=2)
    wait = ("gpuq_queue_wait_seconds_bucket", (("le", "60"), ("priority_class", "normal"), ("project", "alpha"),
                                               ("workload", "training")))
    assert m[wait] == 1  # one of alpha's two training jobs waited under a minute
    assert m[("gpuq_queue_wait_seconds_count", wait[1][1:])] == 2
    assert m[("gpuq_queue_wait_seconds_sum", wait[1][1:])] == 430
    done = (("state", "succeeded"), ("workload", "training"))
    assert m[("gpuq_job_completion_seconds_count", done)] == 2
    assert m[("gpuq_job_completion_seconds_bucket", (("le", "900"), *done))] == 0
    assert m[("gpuq_job_completion_seconds_bucket", (("le", "3600"), *done))] == 2
    assert m[("gpuq_preemptions_total", (("project", "alpha"),))] == 2
    assert m[("gpuq_preemptions_total", (("project", "beta"),))] == 1
    # GPU memory: beta's job uses 8000 MiB of the 20000 it holds, of an 80000 MiB GPU.
    assert m[("gpuq_gpu_memory_used_ratio", (("gpu", "g0"), ("model", "h100-80gb"), ("node", "n1")))] == 0.1
    assert m[("gpuq_project_gpu_memory_used_ratio", (("project", "beta"),))] == 0.4
    # Usage from the rollups: alpha's closed jobs held 1/4 GPU for 3000 s and 600 s at 2.0 per GPU-hour.
    assert m[("gpuq_usage_gpu_equivalent_seconds_total", (("project", "alpha"),))] == 900
    assert m[("gpuq_usage_cost_total", (("project", "alpha"),))] == 0.5
    # Cost by label: only the allow-listed key, the two largest values shown (beta's job, running since T0,
    # has no key: "(none)"), the rest summed as (other).
    by_label = {dict(labels)["value"]: v for (name, labels), v in m.items() if name == "gpuq_usage_cost_by_label_total"}
    assert set(by_label) == {"(none)", "search", "(other)"}
    assert abs(by_label["search"] - 0.25 * 3000 / 3600 * 2.0) < 1e-9
    assert abs(by_label["(other)"] - 0.25 * 600 / 3600 * 2.0) < 1e-9  # ads
    assert not any(name == "gpuq_usage_cost_by_label_total" and dict(labels)["key"] != "feature"
                   for name, labels in m)
    assert not any(name == "gpuq_usage_cost_by_label_total" for name, _ in _samples(sessions))  # off by default


def test_final_jobs_are_summed_once_then_only_the_new_ones() -> None:
    sessions = _world()
    collector = ServiceCollector(sessions)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def succeeded() -> float:
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for s in family.samples:
                if s.name == "gpuq_jobs" and s.labels["state"] == "succeeded":
                    return s.value
        raise AssertionError("no gpuq_jobs")

    assert succeeded() == 2
    with sessions() as session, session.begin():  # beta's running job finishes (its final event says so)
        job = session.get(Job, "j2")
        job.state, job.finished_at = "succeeded", T0 + timedelta(hours=2)
        session.add(JobEvent(job_id="j2", attempt=1, at=job.finished_at, event="finish", from_state="running",
                             to_state="succeeded", actor="agent:n1"))
    assert succeeded() == 3
    assert succeeded() == 3  # not counted twice

"""Coexistence rules as configured (``Settings.coexistence_gpu`` / ``coexistence_node``), overridden by the
table an admin sets over the API (audited). The rule itself is pure: :mod:`queue_service.admission.coexistence`;
the partitioner enforces it (:mod:`partitioner.coexistence`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.admission.coexistence import Rules, check
from queue_service.auth import Principal
from queue_service.db.base import utcnow
from queue_service.db.governance_models import CoexistenceRow
from queue_service.db.models import Allocation, Job
from queue_service.errors import InvalidRequest
from queue_service.lifecycle import effects
from queue_service.services import audit
from queue_service.services import workloads as workload_service
from queue_service.settings import Settings

SCOPES = ("gpu", "node")


def tables(session: Session, *, settings: Settings) -> dict[str, dict[str, list[str]]]:
    """``{"gpu": {...}, "node": {...}}``: the configured tables, a row set over the API wins (per scope)."""
    out = {"gpu": {k: list(v) for k, v in settings.coexistence_gpu.items()},
           "node": {k: list(v) for k, v in settings.coexistence_node.items()}}
    for scope in SCOPES:
        row = session.get(CoexistenceRow, scope)
        if row is not None:
            out[scope] = {k: list(v) for k, v in row.table.items()}
    return out


def effective(session: Session, *, settings: Settings) -> Rules:
    """The rules a cycle places by: the tables over the known workload classes."""
    classes = workload_service.effective(session, settings=settings)
    found = tables(session, settings=settings)
    return Rules(gpu=found["gpu"], node=found["node"], classes=tuple(sorted(classes)),
                 alone_on_gpu=frozenset(n for n, c in classes.items() if not c.may_share_gpu))


def put(session: Session, *, gpu: Mapping[str, Sequence[str]] | None, node: Mapping[str, Sequence[str]] | None,
        settings: Settings, actor: Principal, reason: str = "") -> dict[str, dict[str, list[str]]]:
    """Replace rows of the GPU and/or node table (the rows given; None: the table as it is); a result that
    contradicts itself or names an unknown class: 422 naming the row, nothing changed. Audited with before and
    after."""
    classes = workload_service.effective(session, settings=settings)
    before = tables(session, settings=settings)
    after = dict(before)
    for scope, table in (("gpu", gpu), ("node", node)):
        if table is None:
            continue
        clean = before[scope] | {k: sorted(set(v)) for k, v in table.items()}  # the rows given replace theirs
        problem = check(clean, classes=classes, field=scope)
        if problem is not None:
            raise InvalidRequest(problem.message, field=problem.field)
        after[scope] = clean
    for scope in SCOPES:
        if after[scope] != before[scope]:
            row = session.get(CoexistenceRow, scope)
            if row is None:
                row = CoexistenceRow(scope=scope)
                session.add(row)
            row.table, row.updated_at = after[scope], utcnow()
    audit.record(session, actor=actor, action="coexistence.set", target="coexistence", reason=reason,
                 before=before, after=after)
    effects.queue(session, wake=True)  # waiting jobs are placed by the new rules from the next cycle
    return after


class HeldWorkloads(NamedTuple):
    """The workload classes live allocations hold, as the partitioner's rule checks read them: per GPU and per
    MIG instance one entry per allocation, per node one per gang member."""

    per_node: dict[str, tuple[str, ...]]
    per_gpu: dict[str, tuple[str, ...]]
    per_instance: dict[tuple[str, int], tuple[str, ...]]  # (GPU UUID, MIG start)


NOTHING_HELD = HeldWorkloads({}, {}, {})


def held_workloads(session: Session) -> HeldWorkloads:
    """What every live allocation holds, by node, GPU and MIG instance (the cluster read sets it on each)."""
    rows = session.execute(
        select(Allocation.node_id, Allocation.gpu_uuid, Allocation.mig_start, Allocation.kind, Allocation.job_id,
               Allocation.replica, Job.workload)
        .join(Job, Job.id == Allocation.job_id)
        .where(Allocation.released_at.is_(None))
        .order_by(Allocation.id)
    ).all()
    per_node: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
    per_gpu: dict[str, list[str]] = defaultdict(list)
    per_instance: dict[tuple[str, int], list[str]] = defaultdict(list)
    for node_id, gpu_uuid, mig_start, kind, job_id, replica, workload in rows:
        per_node[node_id][(job_id, replica)] = workload
        if gpu_uuid is not None and kind != "cpu":
            per_gpu[gpu_uuid].append(workload)
            if mig_start is not None:
                per_instance[(gpu_uuid, mig_start)].append(workload)
    return HeldWorkloads(per_node={k: tuple(v.values()) for k, v in per_node.items()},
                         per_gpu={k: tuple(v) for k, v in per_gpu.items()},
                         per_instance={k: tuple(v) for k, v in per_instance.items()})

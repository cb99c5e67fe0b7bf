"""Persisting one cycle: its decisions become lifecycle transitions, layout changes and wait reasons.

All in the cycle's one transaction: GPU modes and MIG layouts, admissions
(``lifecycle.transitions.admit``: job → admitted, attempt and allocation
rows; the database refuses a slice held twice), preemptions
(``request_stop`` with the victim's class grace) and the wait reasons of
the jobs left queued. Launches go out after the commit (``lifecycle.effects``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.types import LayoutChange, Slice
from queue_service.admission.cycle import CycleResult
from queue_service.admitter import read
from queue_service.admitter.launch import launch_spec
from queue_service.admitter.read import QueuedJob
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation, Gpu, Job, JobState, Node
from queue_service.lifecycle import effects, transitions
from queue_service.lifecycle.grace import of_class
from queue_service.lifecycle.states import StopCause
from queue_service.settings import PriorityClass, Settings
from workers.messages import LaunchSpec

log = logging.getLogger(__name__)


def persist(session: Session, result: CycleResult, queued: Mapping[str, QueuedJob], *, held: Mapping[str, str],
            classes: Mapping[str, PriorityClass], settings: Settings) -> list[LaunchSpec]:
    """Write one cycle; returns the launches it queued (sent once the caller commits).

    Only the jobs it changes are loaded as entities: the admitted ones, and those whose wait reason is new.
    """
    reasons = dict(held)  # dependencies and array limits (cancelled ones are final: left alone)
    reasons.update(result.waiting)
    reasons.update({job_id: f"cannot run on the current cluster: {why}" for job_id, why in result.never.items()})
    changed = {job_id: why for job_id, why in reasons.items()
               if (job := queued.get(job_id)) is None or job.reason != why}
    jobs = read.entities(session, [*(a.job_id for a in result.admitted), *changed])
    node_names = dict(session.execute(select(Node.id, Node.name)).all())
    for change in result.layout_changes:
        gpu = session.get(Gpu, change.gpu_uuid)
        if gpu is not None:
            log.info("GPU %s: %s -> %s (%s)", gpu.uuid, gpu.mode, change.mode.value, change.reason)
            gpu.mode = change.mode.value
            gpu.mig_layout = _layout(gpu, change)
    launches = _admit(session, result, jobs, node_names, classes=classes, settings=settings)
    for preemption in result.preemptions:
        for victim_id in preemption.victims:
            victim = session.get(Job, victim_id, with_for_update=True)
            if victim is None or victim.state not in (JobState.ADMITTED, JobState.RUNNING):
                continue
            transitions.request_stop(
                session, job=victim, who=transitions.ADMITTER, cause=StopCause.PREEMPT,
                requeue=victim.requeue_on_preempt,
                grace_s=of_class(classes, victim.priority_class, default_s=settings.default_grace_s),
                reason=f"preempted by job {preemption.job_id} ({preemption.why})",
            )
    transitions.set_wait_reasons(jobs, changed)
    session.flush()
    return launches


def _admit(session: Session, result: CycleResult, jobs: Mapping[str, Job], node_names: Mapping[str, str], *,
           classes: Mapping[str, PriorityClass], settings: Settings) -> list[LaunchSpec]:
    now = db_now(session)  # events, admitted_at and the rows' created_at on the database's clock
    placements = []
    for admission in result.admitted:
        members = []
        for replica, member in enumerate(admission.placement.replicas):
            rows = [
                Allocation(job_id=admission.job_id, replica=replica, node_id=member.node_id, kind=s.kind.value,
                           gpu_uuid=s.gpu_uuid, slot=s.slot, blocks=s.blocks, gpu_memory_mib=s.memory_mib,
                           mig_profile=s.mig_profile, mig_start=s.mig_start, mig_uuid=s.mig_uuid,
                           cpus_milli=0, memory_mib=0)
                for s in member.slices
            ] or [Allocation(job_id=admission.job_id, replica=replica, node_id=member.node_id, kind="cpu", slot="",
                             blocks=0, gpu_memory_mib=0, mig_profile=None, mig_start=None, mig_uuid=None,
                             gpu_uuid=None, cpus_milli=0, memory_mib=0)]
            rows[0].cpus_milli, rows[0].memory_mib = member.cpus_milli, member.memory_mib
            members.append(transitions.ReplicaRows(replica, member.node_id, rows))
        job = jobs[admission.job_id]
        if JobState(job.state) is JobState.QUEUED:  # loaded after the snapshot: a cancel committed since wins
            placements.append((job, members))
    chosen = {a.job_id: a.placement for a in result.admitted}
    launches: list[LaunchSpec] = []
    notes = {a.job_id: a.placement.note for a in result.admitted if a.placement.note}
    for admitted in transitions.admit(session, placements=placements, at=now, notes=notes):
        for held in admitted.replicas:
            for s in chosen[admitted.job.id].replicas[held.replica].slices:
                if s.kind.value == "mig" and s.mig_uuid is None:
                    _record_instance(session, s)
            launches.append(launch_spec(admitted.job, admitted.attempt, held.replica, node_names[held.node_id],
                                        held.rows, classes=classes, settings=settings))
    effects.queue(session, launches=launches)
    return launches


def _layout(gpu: Gpu, change: LayoutChange) -> list[dict]:
    """The GPU's new ``mig_layout``: an instance it keeps (same profile and start) keeps its UUID; shared
    instances are marked ``"shared": true`` (the agent carves the new ones when a job is launched on them)."""
    known = {(m["profile"], m["start"]): m for m in gpu.mig_layout or []}
    shared = set(change.shared_starts)
    out = []
    for profile, start in change.mig_layout:
        entry = {k: v for k, v in known.get((profile, start), {"uuid": None}).items() if k != "shared"}
        entry |= {"profile": profile, "start": start} | ({"shared": True} if start in shared else {})
        out.append(entry)
    return out


def _record_instance(session: Session, s: Slice) -> None:
    """A placement that creates a MIG instance adds it to the GPU's layout (the agent carves it)."""
    gpu = session.get(Gpu, s.gpu_uuid)
    if gpu is not None and all(m["start"] != s.mig_start for m in gpu.mig_layout or []):
        gpu.mig_layout = [*(gpu.mig_layout or []), {"profile": s.mig_profile, "start": s.mig_start, "uuid": None}]

"""What node agents ask of the service: registration, heartbeats, and re-adoption after a restart.

- ``register``: the node's inventory; the answer carries the lease and the
  heartbeat interval the agent must keep (self-fencing is derived from them).
- ``heartbeat``: extends the lease (database clock) and lists, of the
  attempts the agent says it runs, the ``stale`` ones it must stop.
- ``adopt``: the attempts the agent's runtimes still hold after a restart:
  which to keep supervising (with their launch spec) and which to stop.
  Attempts the database places on the node that the agent did not bring
  back are lost (requeued) if they had started, re-sent if not.
- ``node_fault``: an attempt the node itself failed to start (logs
  unwritable, engine down, cgroup error). ``node_fault_drain_count`` of them
  within ``node_fault_window_s`` drain the node with the reason (an audit
  row, ``gpuq nodes``, the ``gpuq_node_drained`` metric): one broken node is
  taken out instead of failing the queue's jobs one attempt after another.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.admitter.launch import launch_spec
from queue_service.db.clock import db_now
from queue_service.db.models import Allocation, Job, JobState, Node, NodeStatus
from queue_service.db.priority_classes import effective
from queue_service.lifecycle import effects, grace, transitions
from queue_service.recovery import lock_jobs
from queue_service.services import audit
from queue_service.services import nodes as node_service
from queue_service.services.fleet import FleetSize
from queue_service.settings import PriorityClass, Settings
from workers.messages import (
    AdoptAnswer,
    AttemptKey,
    HeartbeatAnswer,
    KeptAttempt,
    LaunchSpec,
    NodeInventory,
    RegisterAnswer,
)

Key = node_service.AttemptKey


def _key(k: AttemptKey) -> Key:
    return (k.job_id, k.attempt, k.replica)


def _ref(key: Key) -> AttemptKey:
    return AttemptKey(job_id=key[0], attempt=key[1], replica=key[2])


def register(session: Session, *, inventory: NodeInventory, settings: Settings, fleet: FleetSize) -> RegisterAnswer:
    """Create or refresh the node; the cluster changed, so "never fits" answers and the queue may too.
    The lease and interval follow the fleet's size, this node counted (``services.fleet``)."""
    node = node_service.register(session, inventory=inventory, lease_s=settings.node_lease_s,
                                 max_gpus=settings.max_gpus_per_node)
    timing = fleet.timing(session, settings, fresh=True)  # this node counted (flushed)
    node.lease_expires_at = (node.last_heartbeat_at or db_now(session)) + timedelta(seconds=timing.lease_s)
    effects.queue(session, cluster_changed=True, wake=True)
    return RegisterAnswer(node_id=node.id, lease_s=timing.lease_s, heartbeat_s=timing.heartbeat_s)


def heartbeat(session: Session, *, node_name: str, running: Iterable[AttemptKey] | None,
              settings: Settings, fleet: FleetSize, mps: dict[str, str] | None = None,
              waited_s: float = 0.0) -> HeartbeatAnswer:
    """Extend the lease (and store the devices' MPS status); ``stale``: attempts the agent runs that the
    database no longer places there. ``waited_s``: how long the request waited here before this (it arrived
    that long ago: what it lists is what the agent ran then)."""
    timing = fleet.timing(session, settings)
    node = node_service.heartbeat(session, node_name=node_name, lease_s=timing.lease_s, mps=mps)
    stale: list[AttemptKey] = []
    if node is not None and running is not None:
        current = node_service.placed_attempts(session, node_name=node_name)
        stale = [_ref(_key(k)) for k in running if _key(k) not in current]
        _lose_vanished(session, node_name=node_name, current=current, running={_key(k) for k in running},
                       settings=settings, waited_s=waited_s, heartbeat_s=timing.heartbeat_s)
    return HeartbeatAnswer(known=node is not None, lease_s=timing.lease_s, heartbeat_s=timing.heartbeat_s,
                           stale=stale)


# (node, attempt key) -> when (database clock) the first heartbeat of that node that left out an attempt the
# database says runs there arrived
_missing: dict[tuple[str, Key], datetime] = {}
VANISHED_AFTER_S = 5.0  # and at least two heartbeat intervals: a heartbeat sent just before a start is no proof


def _lose_vanished(session: Session, *, node_name: str, current: dict[Key, node_service.Placed], running: set[Key],
                   settings: Settings, heartbeat_s: float, waited_s: float = 0.0) -> None:
    """A running attempt its agent no longer runs (its process is gone) is lost, never left ``running``.

    The agent's heartbeat lists what it runs. An attempt the database has
    running on the node that heartbeats leave out for ``VANISHED_AFTER_S``
    (and two heartbeat intervals) is gone: it is lost (requeued, or failed
    after ``max_retries``; one being cancelled ends cancelled), so it is
    neither billed nor shown running for ever, and ``gpuq cancel`` ends it.

    Judged by when each heartbeat arrived (``waited_s`` before it was
    handled), never by when it was handled: under load a heartbeat the agent
    sent before the launch reached it waited here for seconds, behind the
    start claim; judged by handling time, two such heartbeats lost a job
    that was running. Only a heartbeat that arrived after the start claim
    was committed is evidence, and the span between the first and the last
    is measured between their arrivals (both on the database clock).
    """
    wait_s = max(VANISHED_AFTER_S, 2 * heartbeat_s)
    for entry in [k for k in _missing if k[0] == node_name and (k[1] in running or k[1] not in current)]:
        _missing.pop(entry, None)
    left_out = [(key, placed.started_at) for key, placed in sorted(current.items())
                if key not in running and placed.state == JobState.RUNNING and placed.started_at is not None]
    if not left_out:  # the usual heartbeat: it lists all it runs (no clock read, no lock)
        return
    arrived = db_now(session) - timedelta(seconds=max(0.0, waited_s))
    gone: list[Key] = []
    for key, started_at in left_out:
        if arrived <= started_at:  # it arrived before the start was claimed: it may have been sent before
            continue
        first = _missing.get((node_name, key))
        if first is None:  # the first heartbeat without it: no proof yet (it may have been sent before the start)
            _missing[(node_name, key)] = arrived
            continue
        if (arrived - first).total_seconds() < wait_s or (arrived - started_at).total_seconds() < wait_s:
            continue
        _missing.pop((node_name, key), None)
        gone.append(key)
    if not gone:
        return
    # All at once, in id order, before any is lost (``recovery.lock_jobs``: losing one updates the rollups).
    locked = lock_jobs(session, (key[0] for key in gone))
    classes = effective(session, settings=settings)
    for key in gone:
        job = locked.get(key[0])
        if job is None or job.attempt != key[1] or job.state != JobState.RUNNING:
            continue
        transitions.lose_attempt(
            session, job=job, reason=f"its process is gone: the agent of {node_name} no longer runs it",
            who=transitions.SERVICE, max_retries=settings.max_retries,
            grace_s=grace.of_class(classes, job.priority_class, default_s=settings.default_grace_s),
        )


def _spec(session: Session, job: Job, key: Key, node_name: str, *, classes: dict[str, PriorityClass],
          settings: Settings) -> LaunchSpec:
    rows = session.scalars(
        select(Allocation).join(Node, Node.id == Allocation.node_id)
        .where(Allocation.job_id == job.id, Allocation.attempt == key[1], Allocation.replica == key[2])
        .where(Node.name == node_name)
    ).all()
    return launch_spec(job, key[1], key[2], node_name, rows, classes=classes, settings=settings)


def adopt(session: Session, *, node_name: str, attempts: Iterable[AttemptKey], settings: Settings,
          fleet: FleetSize) -> AdoptAnswer:
    """After an agent restart: which of the attempts its runtimes still hold to keep, which to stop."""
    current = node_service.current_attempts(session, node_name=node_name)
    adopted = {_key(k) for k in attempts}
    classes = effective(session, settings=settings)
    now = db_now(session)
    keep: list[KeptAttempt] = []
    stop: list[AttemptKey] = []
    for key in sorted(adopted):
        if key not in current:
            stop.append(_ref(key))
            continue
        job, attempt = current[key]
        spec = _spec(session, job, key, node_name, classes=classes, settings=settings)
        elapsed = (now - attempt.started_at).total_seconds() if attempt.started_at else 0.0
        keep.append(KeptAttempt(job_id=key[0], attempt=key[1], replica=key[2], state=job.state,
                                elapsed_s=max(0.0, elapsed), spec=spec.to_dict()))
    lost_jobs: set[str] = set()
    launches: list[LaunchSpec] = []
    for key, (job, attempt) in sorted(current.items()):
        if key in adopted or job.id in lost_jobs:
            continue
        if job.state == JobState.RUNNING:
            lost_jobs.add(job.id)
            session.refresh(job, with_for_update=True)
            if job.attempt != key[1] or JobState(job.state) not in (JobState.RUNNING, JobState.ADMITTED):
                continue
            transitions.lose_attempt(
                session, job=job, reason=f"the agent of {node_name} restarted without it", who=transitions.SERVICE,
                max_retries=settings.max_retries,
                grace_s=grace.of_class(classes, job.priority_class, default_s=settings.default_grace_s),
            )
        else:
            launches.append(_spec(session, job, key, node_name, classes=classes, settings=settings))
            attempt.launch_sent_at = now
    effects.queue(session, launches=launches)
    timing = fleet.timing(session, settings)
    return AdoptAnswer(keep=keep, stop=stop, lease_s=timing.lease_s, heartbeat_s=timing.heartbeat_s)


def node_fault(session: Session, *, node_name: str, reason: str, settings: Settings) -> bool:
    """Count one launch failure that was the node's; drain the node at ``node_fault_drain_count``. True if drained."""
    node = node_service.lock(session, node_name)
    if node is None:
        return False
    now = db_now(session)
    window = settings.node_fault_window_s
    recent = node.last_node_fault_at is not None and (now - node.last_node_fault_at).total_seconds() <= window
    node.node_faults = (node.node_faults or 0) + 1 if recent else 1
    node.last_node_fault_at = now
    if node.node_faults < settings.node_fault_drain_count or node.status != NodeStatus.READY:
        return False
    before = {"status": node.status}
    node.status = NodeStatus.DRAINING
    node.drain_reason = (f"drained by gpuq: {node.node_faults} launches failed by the node within {window:g} s "
                         f"(last: {reason[:300]})")
    audit.record(session, actor="service", action="node.drain", target=node_name, reason=node.drain_reason,
                 before=before, after={"status": node.status})
    effects.queue(session, cluster_changed=True, wake=True)
    return True

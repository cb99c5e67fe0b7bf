"""How often agents heartbeat, scaled with the fleet: the service answers every register, heartbeat and adopt
with the lease and the interval the agent keeps (``workers.agent.lease``).

A thousand agents heartbeating every 5 s are 200 requests/s of lease renewals before any work. The rule
is Nomad's (``max_heartbeats_per_second``): the interval grows with the fleet so that all of it sends at
most ``Settings.max_heartbeats_per_s``, and the lease grows in step (it stays the same number of
heartbeats). Up to ``max_heartbeats_per_s × heartbeat_interval_s`` nodes (250 by default) nothing
changes; above, a dead node is noticed later (1,000 nodes: every 20 s, a 120 s lease) — what a bigger
fleet trades for a server that is not busy renewing leases. Exits, start claims and logs are their own
requests: a job's end is never waiting for a heartbeat.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from queue_service.db.models import Node, NodeStatus
from queue_service.settings import Settings

COUNT_TTL_S = 10.0  # the fleet's size is read again at most this often (a register reads it at once)


@dataclass(frozen=True, slots=True)
class Timing:
    """What an agent is told to keep: its lease and how often to renew it."""

    lease_s: float
    heartbeat_s: float


def timing(nodes: int, settings: Settings) -> Timing:
    """The interval for ``nodes`` registered nodes: at most ``max_heartbeats_per_s`` from all of them."""
    every_s = nodes / settings.max_heartbeats_per_s
    if every_s <= settings.heartbeat_interval_s or settings.heartbeat_interval_s <= 0:
        return Timing(lease_s=settings.node_lease_s, heartbeat_s=settings.heartbeat_interval_s)
    return Timing(lease_s=settings.node_lease_s * every_s / settings.heartbeat_interval_s, heartbeat_s=every_s)


class FleetSize:
    """The number of nodes that are not down, cached for ``COUNT_TTL_S`` (one per service process)."""

    def __init__(self, ttl_s: float = COUNT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._count = 0

    def count(self, session: Session, *, fresh: bool = False) -> int:
        with self._lock:
            if fresh or time.monotonic() - self._read_at > self.ttl_s:
                self._count = session.scalar(
                    select(func.count()).select_from(Node).where(Node.status != NodeStatus.DOWN)) or 0
                self._read_at = time.monotonic()
            return self._count

    def timing(self, session: Session, settings: Settings, *, fresh: bool = False) -> Timing:
        """``timing`` for the fleet as last read (``fresh``: read it now, as a register does)."""
        return timing(self.count(session, fresh=fresh), settings)

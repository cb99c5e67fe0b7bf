"""Can a request fit the registered cluster *ever* (on empty nodes)? Cached between submissions."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.types import NoFit, Request
from queue_service.admission.cycle import PackerFactory, PackerLike
from queue_service.admitter.read import build_cluster
from queue_service.db.models import Node, NodeStatus


class Feasibility:
    """The never-fits check of a submission.

    The answer depends only on which nodes and GPUs exist, so one packer over
    the emptied cluster serves every submission for ``ttl_s`` seconds (or until
    a node registers), with answers memoised per request shape.
    """

    def __init__(self, packer_factory: PackerFactory, *, ttl_s: float = 2.0) -> None:
        self.packer_factory = packer_factory
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._built_at = -1e9
        self._packer: PackerLike | None = None
        self._memo: dict[Request, NoFit | None] = {}
        self._runtimes: frozenset[str] = frozenset()  # what the registered nodes run: "process", "docker"

    def invalidate(self) -> None:
        """The cluster changed (a node registered): rebuild on the next check."""
        with self._lock:
            self._built_at = -1e9

    def _refresh(self, session: Session) -> None:
        if time.monotonic() - self._built_at > self.ttl_s:
            # Every registered node that is not down: a cordoned or draining node comes back.
            cluster = build_cluster(session, include_usage=False, registered=True)
            self._packer = self.packer_factory(cluster) if cluster.nodes else None
            self._runtimes = frozenset(
                kind for runtimes in session.scalars(select(Node.runtimes).where(Node.status != NodeStatus.DOWN))
                for kind in runtimes or ())
            self._memo.clear()
            self._built_at = time.monotonic()

    def runtime_missing(self, session: Session, *, image: bool) -> str | None:
        """Why no registered node could run this kind of job (an image or a host process), or None."""
        with self._lock:
            self._refresh(session)
            if self._packer is None:
                return None  # nothing registered yet: the job waits with that reason
            if image and "docker" not in self._runtimes:
                return "no registered node runs containers (none has a Docker engine): drop the image, or add one"
            if not image and "process" not in self._runtimes:
                return ("no registered node runs host processes (every agent is --runtime docker): "
                        "give the job an image")
            return None

    def check(self, session: Session, request: Request) -> NoFit | None:
        """None if it could fit (or nothing is registered yet: it is then held with a reason)."""
        with self._lock:
            self._refresh(session)
            if self._packer is None:
                return None
            if request not in self._memo:
                decision = self._packer.place(request)
                self._memo[request] = decision if isinstance(decision, NoFit) and decision.never else None
            return self._memo[request]

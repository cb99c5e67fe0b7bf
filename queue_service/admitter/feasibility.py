"""Can a request fit the registered cluster *ever* (on empty nodes)? Cached between submissions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from partitioner.catalog import lookup_model
from partitioner.mig import shared_profiles
from partitioner.types import NoFit, Request
from queue_service.admission.cycle import PackerFactory, PackerLike
from queue_service.admitter.read import build_cluster
from queue_service.db.models import Gpu, Node, NodeStatus

T = TypeVar("T")

# A refusal from a cache older than this is checked again on a fresh read first: a node registered through
# another API process (``replicas``) invalidates only that process's cache. Refusals are rare, and a caller
# repeating one costs at most one rebuild per CONFIRM_S.
CONFIRM_S = 0.25


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
        self._shared_mib: dict[str, int] = {}  # model key -> the most GPU memory one block job could get

    def invalidate(self) -> None:
        """The cluster changed (a node registered): rebuild on the next check."""
        with self._lock:
            self._built_at = -1e9

    def _refresh(self, session: Session, *, older_than_s: float | None = None) -> None:
        if time.monotonic() - self._built_at > (self.ttl_s if older_than_s is None else older_than_s):
            # Every registered node that is not down: a cordoned or draining node comes back.
            cluster = build_cluster(session, include_usage=False, registered=True)
            self._packer = self.packer_factory(cluster) if cluster.nodes else None
            self._runtimes = frozenset(
                kind for runtimes in session.scalars(select(Node.runtimes).where(Node.status != NodeStatus.DOWN))
                for kind in runtimes or ())
            self._shared_mib = shared_room(session)
            self._memo.clear()
            self._built_at = time.monotonic()

    def runtime_missing(self, session: Session, *, image: bool) -> str | None:
        """Why no registered node could run this kind of job (an image or a host process), or None."""
        return self._confirmed(session, lambda: self._runtime_missing(image))

    def _runtime_missing(self, image: bool) -> str | None:
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
        return self._confirmed(session, lambda: self._never(request))

    def _confirmed(self, session: Session, refusal: Callable[[], T | None]) -> T | None:
        """``refusal()`` on the cached cluster; a refusal is read again against the nodes as they are now
        (see ``CONFIRM_S``)."""
        with self._lock:
            self._refresh(session)
            why = refusal()
            if why is not None:
                self._refresh(session, older_than_s=CONFIRM_S)
                why = refusal()
            return why

    def _never(self, request: Request) -> NoFit | None:
        if self._packer is None:
            return None
        if request not in self._memo:
            decision = self._packer.place(request)
            never = decision if isinstance(decision, NoFit) and decision.never else None
            self._memo[request] = never or self._shared_memory_never(request)
        return self._memo[request]

    def _shared_memory_never(self, request: Request) -> NoFit | None:
        """A blocks request's memory no shared GPU and no shared MIG instance of an allowed model can hold."""
        if request.blocks <= 0 or request.gpu_memory_mib <= 0:
            return None
        wanted = {model.key if (model := lookup_model(m)) else m.strip().lower() for m in request.gpu_models}
        room = [mib for key, mib in self._shared_mib.items() if not wanted or key in wanted]
        biggest = max(room, default=0)
        if not room or request.gpu_memory_mib <= biggest:
            return None  # no allowed GPU at all is the packer's answer
        return NoFit(f"gpu_memory_mib {request.gpu_memory_mib} MiB is more than any shared GPU or shared MIG instance "
                     f"can hold: the most is {biggest} MiB (blocks are a share of one GPU or of one MIG instance)",
                     never=True, field_name="resources.gpu_memory_mib")


def shared_room(session: Session) -> dict[str, int]:
    """Per GPU model, the most memory one block job could hold on a registered GPU (not down).

    A GPU an agent probed through NVML with MIG enabled stays in MIG mode (the driver's), so its blocks go to
    a shared MIG instance: the largest profile's memory. Any other GPU can be made shared whole.
    """
    rows = session.execute(
        select(Gpu.model, Gpu.memory_mib, Gpu.mig_enabled, Node.gpu_source).join(Node, Node.id == Gpu.node_id)
        .where(Gpu.present.is_(True), Node.status != NodeStatus.DOWN)
    ).all()
    out: dict[str, int] = {}
    for model_key, memory_mib, mig_enabled, source in rows:
        room = memory_mib
        model = lookup_model(model_key)
        if mig_enabled and source == "nvml" and model is not None and model.mig_capable:
            room = max((p.memory_mib for p in shared_profiles(model, 0)), default=0)
        key = model.key if model is not None else model_key.strip().lower()
        out[key] = max(out.get(key, 0), room)
    return out

"""The agent's sampler thread: NVML per-process samples -> per-job samples -> ``/v1/agent/samples``.

Attribution: a GPU (or MIG device) held by one running job here is that
job's, whatever process is on it (children, a container's PIDs). A GPU
shared by several jobs (blocks) is attributed by PID where the runtime's
handle is the job's PID; samples it cannot attribute are dropped rather
than billed to the wrong job. Without NVML (simulated GPUs) nothing is
sent. The service stamps samples with its own clock; ``window_s`` is the
only time figure an agent gives.

The sampler sees the agent through two narrow seams: ``holders`` (a
callable: which runs hold which GPU now) and the client's ``samples``
method. It reads no other part of the agent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from workers.client import Refused, ServiceUnavailable
from workers.gpu.nvml import ProcessSample, sample_utilization
from workers.protocol import SampleBody, SamplesAnswer

log = logging.getLogger(__name__)

MAX_WINDOW_S = 3600.0  # SampleBody.window_s's limit: a longer gap (a stalled thread) is reported as this


class Holder(NamedTuple):
    """A run holding a GPU here, as samples are attributed to it."""

    job_id: str
    attempt: int
    replica: int
    handle: str | None  # the runtime's handle (a pid for processes): attribution by PID on shared GPUs


Holders = dict[str, list[Holder]]  # GPU / MIG UUID -> the live runs holding it


class SamplesClient(Protocol):
    """What the sampler needs of the agent's client."""

    def samples(self, node_name: str, samples: list[SampleBody]) -> SamplesAnswer: ...


def attribute(samples: list[ProcessSample], holders: Mapping[str, Sequence[tuple[str, int, int, str | None]]],
              window_s: float) -> list[dict[str, Any]]:
    """Per (job, attempt, replica, GPU): summed SM % (None if NVML gave none) and memory used.

    ``holders`` maps a GPU/MIG UUID to the runs holding it here, each as
    (job_id, attempt, replica, runtime handle) — a ``Holder`` or a plain tuple.
    """
    sums: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    for s in samples:
        runs = holders.get(s.gpu_uuid, [])
        if len(runs) == 1:
            owner: tuple[str, int, int, str | None] | None = runs[0]
        else:
            owner = next((r for r in runs if r[3] is not None and r[3] == str(s.pid)), None)
        if owner is None:
            continue
        key = (owner[0], owner[1], owner[2], s.gpu_uuid)
        entry = sums.setdefault(key, {"sm_percent": None, "memory_used_mib": 0})
        if s.sm_percent is not None:
            entry["sm_percent"] = min(100.0, (entry["sm_percent"] or 0.0) + s.sm_percent)
        entry["memory_used_mib"] += s.memory_used_mib
    # A held GPU with no process on it is idle, and that is worth saying (idle detection).
    for uuid, runs in holders.items():
        if len(runs) == 1:
            job_id, attempt, replica, _handle = runs[0]
            sums.setdefault((job_id, attempt, replica, uuid), {"sm_percent": 0.0, "memory_used_mib": 0})
    return [{"job_id": j, "attempt": a, "replica": r, "gpu_uuid": u, "window_s": window_s, **v}
            for (j, a, r, u), v in sums.items()]


class Sampler:
    """Samples this node's running jobs every ``interval_s`` until ``stopping`` is set."""

    def __init__(self, *, node_name: str, holders: Callable[[], Holders], client: SamplesClient,
                 interval_s: float = 30.0, stopping: threading.Event | None = None, nvml: Any = None) -> None:
        self.node_name = node_name
        self.holders = holders
        self.client = client
        self.interval_s = interval_s
        self.stopping = stopping if stopping is not None else threading.Event()
        self.nvml = nvml
        self._since_us = 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"gpuq-sampler-{self.node_name}", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        last = time.monotonic()
        while not self.stopping.wait(self.interval_s):
            now = time.monotonic()
            try:
                self.once(window_s=now - last)
            except Exception:
                log.exception("sampling failed; trying again next interval")
            last = now

    def once(self, *, window_s: float) -> int:
        """Sample and send; returns how many samples went out."""
        holders = self.holders()
        if not holders:
            return 0
        started_us = int(time.time() * 1e6)
        raw = sample_utilization(self.nvml, list(holders), since_us=self._since_us)
        self._since_us = started_us
        if not raw:
            return 0  # no NVML here (simulated GPUs): nothing measured, nothing claimed
        window_s = min(window_s, MAX_WINDOW_S)
        samples = [SampleBody.model_validate(s) for s in attribute(raw, holders, window_s)]
        try:
            self.client.samples(self.node_name, samples)
        except (Refused, ServiceUnavailable) as exc:  # a stale attempt, or the service away: next time
            log.info("samples not accepted: %s", exc)
        return len(samples)

"""The agent's sampler thread: NVML per-process samples -> per-job samples -> ``/v1/agent/samples``.

Attribution: a GPU (or MIG device) held by one running job here is that
job's, whatever process is on it (children, a container's PIDs). A GPU
shared by several jobs (blocks) is attributed by PID where the runtime's
handle is the job's PID; samples it cannot attribute are dropped rather
than billed to the wrong job. Without NVML (simulated GPUs) nothing is
sent. The service stamps samples with its own clock; ``window_s`` is the
only time figure an agent gives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from workers.client import Refused, ServiceUnavailable
from workers.gpu.nvml import ProcessSample, sample_utilization

if TYPE_CHECKING:
    from workers.agent import Agent

log = logging.getLogger(__name__)


def attribute(samples: list[ProcessSample], holders: dict[str, list[tuple[str, int, int, str | None]]],
              window_s: float) -> list[dict[str, Any]]:
    """Per (job, attempt, replica, GPU): summed SM % (None if NVML gave none) and memory used.

    ``holders`` maps a GPU/MIG UUID to the runs holding it here, each as
    (job_id, attempt, replica, runtime handle).
    """
    sums: dict[tuple, dict[str, Any]] = {}
    for s in samples:
        runs = holders.get(s.gpu_uuid, [])
        if len(runs) == 1:
            owner = runs[0]
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
        if len(runs) == 1 and not any((*runs[0][:3], uuid) == k for k in sums):
            sums[(*runs[0][:3], uuid)] = {"sm_percent": 0.0, "memory_used_mib": 0}
    return [{"job_id": j, "attempt": a, "replica": r, "gpu_uuid": u, "window_s": window_s, **v}
            for (j, a, r, u), v in sums.items()]


class Sampler:
    """Samples this node's running jobs every ``interval_s`` until the agent stops."""

    def __init__(self, agent: Agent, *, interval_s: float = 30.0, nvml: Any = None) -> None:
        self.agent = agent
        self.interval_s = interval_s
        self.nvml = nvml
        self._since_us = 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"gpuq-sampler-{self.agent.node_name}", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        last = time.monotonic()
        while not self.agent._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                self.once(window_s=now - last)
            except Exception:  # noqa: BLE001 - sampling must never take the agent down
                log.exception("sampling failed; trying again next interval")
            last = now

    def holders(self) -> dict[str, list[tuple[str, int, int, str | None]]]:
        out: dict[str, list] = defaultdict(list)
        with self.agent._lock:
            runs = [r for r in self.agent._runs.values() if not r.done.is_set()]
        for run in runs:
            for uuid in run.spec.gpu_uuids:
                out[uuid].append((run.spec.job_id, run.spec.attempt, run.spec.replica, run.handle))
        return dict(out)

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
        samples = attribute(raw, holders, window_s)
        try:
            # The client's bounded-retry POST (there is no named method for this route in workers/client.py).
            self.agent.client._post("/v1/agent/samples", {"node_name": self.agent.node_name, "samples": samples})
        except (Refused, ServiceUnavailable) as exc:  # a stale attempt, or the service away: next time
            log.info("samples not accepted: %s", exc)
        return len(samples)

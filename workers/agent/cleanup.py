"""Removing what is left of an attempt (a container), retried while the engine is away.

A removal that fails (the Docker daemon restarting) is remembered and
retried after every answered heartbeat, so an attempt's container never
outlives the agent's knowledge of it for long.
"""

from __future__ import annotations

import logging
import threading

from workers.agent.runs import Run
from workers.runtime.base import Runtime

log = logging.getLogger(__name__)


class Cleanup:
    """Removes attempts' leftovers; keeps the failed removals for ``retry``."""

    def __init__(self) -> None:
        self._pending: dict[str, Runtime] = {}  # handles whose removal failed (engine away)
        self._lock = threading.Lock()

    def run(self, run: Run) -> None:
        """Remove what is left of ``run`` (nothing if it never launched)."""
        if run.handle is not None and run.runtime is not None:
            self.handle(run.runtime, run.handle)

    def handle(self, runtime: Runtime, handle: str) -> bool:
        """Remove one handle's leftovers; False (and kept for ``retry``) if the runtime failed."""
        try:
            runtime.cleanup(handle)
        except Exception as exc:  # noqa: BLE001 - whatever the engine raised, retry later
            log.warning("cleanup of %s failed (%s); will retry", handle[:12], exc)
            with self._lock:
                self._pending[handle] = runtime
            return False
        with self._lock:
            self._pending.pop(handle, None)
        return True

    def retry(self) -> None:
        """Retry the failed removals, stopping at the first that fails again (the engine is still away)."""
        with self._lock:
            pending = list(self._pending.items())
        for handle, runtime in pending:
            if not self.handle(runtime, handle):
                break

"""Re-adoption after an agent restart: take back the attempts the runtimes still hold, or remove them.

Every attempt a runtime still holds for this node (Docker: containers
labelled with it, running or exited) is offered to ``/v1/agent/adopt``. The
service answers which are current (``keep``: supervised again with their
launch spec, their exit reported, their time limit kept from the run time
so far) and which are stale (``stop``: stopped and removed here). The
process runtime cannot re-adopt: its jobs die with the agent and the
service requeues them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from workers.agent.runs import Run, RunBook, RunKey
from workers.client import ServiceClient
from workers.messages import LaunchSpec
from workers.runtime.base import Runtime, RuntimeError_

log = logging.getLogger(__name__)

STALE_STOP_GRACE_S = 1.0  # a stale attempt found after a restart already ran elsewhere: no long grace


def adopt(*, client: ServiceClient, node_name: str, runtimes: dict[str, Runtime], book: RunBook,
          supervise: Callable[[Run], None]) -> list[RunKey]:
    """Offer what the runtimes hold; stop the stale, put the kept in ``book`` and ``supervise`` each. Returns kept."""
    found: dict[RunKey, tuple[Runtime, str]] = {}
    for runtime in runtimes.values():
        try:
            adopted = runtime.adopt(node_name)
        except RuntimeError_ as exc:
            log.error("cannot list %s attempts to re-adopt: %s", runtime.name, exc)
            continue
        for held in adopted:
            found[(held.job_id, held.attempt, held.replica)] = (runtime, held.handle)
    answer = client.adopt(node_name, sorted(found))
    for ref in answer.stop:
        if ref.key() not in found:
            continue
        runtime, handle = found[ref.key()]
        log.info("stopping stale attempt %s found after restart", ref.key())
        try:
            runtime.stop(handle, grace_s=STALE_STOP_GRACE_S)
            runtime.cleanup(handle)
        except RuntimeError_ as exc:
            log.error("could not remove stale %s: %s", ref.key(), exc)
        book.mark_ended(ref.key())
    kept = []
    for item in answer.keep:
        if item.key() not in found:
            continue
        runtime, handle = found[item.key()]
        run = book.new_run(LaunchSpec.from_dict(item.spec))
        run.handle, run.runtime, run.adopted = handle, runtime, True
        run.elapsed_s = item.elapsed_s
        book.put(run)
        log.info("re-adopted %s (%s %s)", item.key(), runtime.name, handle[:12])
        supervise(run)
        kept.append(item.key())
    return kept

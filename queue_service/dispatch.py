"""Sending commands to node agents through dramatiq, by actor name.

The service never imports the actors themselves: it builds a
``dramatiq.Message`` for the actor name and the node's queue. Postgres is the
source of truth and the broker only the doorbell, so a failed send is logged
and left to the reconciler, never raised into a request.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.messages import LAUNCH_ACTOR, STOP_ACTOR, LaunchSpec, StopRequest, node_queue_name

log = logging.getLogger(__name__)

_memory_broker: StubBroker | None = None


def make_broker(url: str) -> dramatiq.Broker:
    """``memory://`` gives the process-wide in-memory broker; ``redis://…`` a Redis broker."""
    global _memory_broker
    if url.startswith("memory://"):
        if _memory_broker is None:
            _memory_broker = StubBroker()
            _memory_broker.emit_after("process_boot")
        return _memory_broker
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    raise ValueError(f"unsupported broker URL {url!r} (use memory:// or redis://host:port/db)")


class Dispatcher:
    """Sends launch and stop commands to a node's queue."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def _send(self, actor_name: str, node_name: str, payload: dict) -> bool:
        queue = node_queue_name(node_name)
        try:
            self.broker.declare_queue(queue)
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=queue, actor_name=actor_name, args=(payload,), kwargs={}, options={}
            )
            self.broker.enqueue(message)
            return True
        except Exception:  # the reconciler resends; never fail the caller
            log.exception("could not send %s to %s", actor_name, queue)
            return False

    def launch(self, spec: LaunchSpec) -> bool:
        return self._send(LAUNCH_ACTOR, spec.node_name, spec.to_dict())

    def stop(self, request: StopRequest) -> bool:
        return self._send(STOP_ACTOR, request.node_name, request.to_dict())

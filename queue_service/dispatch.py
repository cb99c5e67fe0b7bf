"""Sending commands to node agents through dramatiq, by actor name.

The service never imports the actors themselves: it builds a
``dramatiq.Message`` for the actor name and the node's queue. Postgres is the
source of truth and the broker only the doorbell, so a failed send is logged
and left to the reconciler, never raised into a request.

A transaction's commands go out together (:meth:`Dispatcher.send`): on Redis
in one pipeline, one round trip for all of them. An admission cycle that
admitted 300 jobs sent 300 enqueues one by one, and each round trip waited
to take the GIL back from the request threads: 3-5 s between the commit and
the last launch (300 simulated hosts), while the agents waited for work.
The pipelined enqueue is dramatiq's own (``RedisBroker.enqueue`` and its
dispatch script, run against the pipeline: :class:`_Pipelined`), so the
message ids, options and script arguments are exactly those of a single send.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

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
        try:
            self.broker.enqueue(self._message(actor_name, node_name, payload))
            return True
        except Exception:  # the reconciler resends; never fail the caller
            log.exception("could not send %s to %s", actor_name, node_queue_name(node_name))
            return False

    def launch(self, spec: LaunchSpec) -> bool:
        return self._send(LAUNCH_ACTOR, spec.node_name, spec.to_dict())

    def stop(self, request: StopRequest) -> bool:
        return self._send(STOP_ACTOR, request.node_name, request.to_dict())

    def send(self, launches: Sequence[LaunchSpec], stops: Sequence[StopRequest]) -> bool:
        """Launches, then stops, in that order per node queue; on Redis in one pipeline. False if any
        failed (logged; the reconciler re-sends what is outstanding)."""
        commands = [(LAUNCH_ACTOR, spec.node_name, spec.to_dict()) for spec in launches]
        commands += [(STOP_ACTOR, request.node_name, request.to_dict()) for request in stops]
        if len(commands) > 1 and _pipelines(self.broker):
            try:
                _Pipelined(self.broker).send([self._message(*command) for command in commands])
                return True
            except Exception:  # the reconciler resends; never fail the caller
                log.exception("could not send %d commands in one pipeline", len(commands))
                return False
        sent = [self._send(*command) for command in commands]  # every one tried, even after one failed
        return all(sent)

    def _message(self, actor_name: str, node_name: str, payload: dict) -> dramatiq.Message[None]:
        queue = node_queue_name(node_name)
        self.broker.declare_queue(queue)
        return dramatiq.Message(queue_name=queue, actor_name=actor_name, args=(payload,), kwargs={}, options={})


def _pipelines(broker: dramatiq.Broker) -> bool:
    """Whether ``broker`` is a Redis broker whose enqueue :class:`_Pipelined` can run against a pipeline."""
    from dramatiq.brokers.redis import RedisBroker

    return isinstance(broker, RedisBroker) and callable(getattr(RedisBroker, "_dispatch", None)) \
        and "dispatch" in getattr(broker, "scripts", {})


class _Pipelined:
    """A Redis broker whose ``do_*`` commands go into one pipeline: ``RedisBroker.enqueue`` itself runs
    against it (message copy with a fresh ``redis_message_id``, middleware hooks, the dispatch script's
    arguments), then the pipeline executes once."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._pipe = broker.client.pipeline(transaction=False)
        script = broker.scripts["dispatch"]
        pipe = self._pipe
        self.scripts = {"dispatch": lambda *, keys, args: script(keys=keys, args=args, client=pipe)}

    def __getattr__(self, name: str) -> Any:
        from dramatiq.brokers.redis import RedisBroker

        if name.startswith("do_"):  # RedisBroker.__getattr__'s rule, with this object's scripts
            return RedisBroker._dispatch(self, name[len("do_"):])  # type: ignore[arg-type]
        return getattr(self._broker, name)

    def send(self, messages: list[dramatiq.Message[None]]) -> None:
        from dramatiq.brokers.redis import RedisBroker

        for message in messages:
            RedisBroker.enqueue(self, message)  # type: ignore[arg-type]
        self._pipe.execute()

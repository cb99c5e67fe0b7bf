"""Thin dramatiq actors: decode the message, hand it to the node's agent, return.

Actors are declared on a given broker (not the global one) so one process can
hold the embedded service's broker and several simulated nodes in tests.
They are idempotent: the agent ignores an attempt it runs or has run.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import dramatiq

from workers.messages import LAUNCH_ACTOR, STOP_ACTOR, LaunchSpec, StopRequest, node_queue_name
from workers.quiet import QuietWorker


class NodeAgent(Protocol):
    """What the actors need of an agent (``workers.agent.Agent``)."""

    node_name: str

    def ensure_running(self, spec: LaunchSpec) -> None: ...

    def ensure_stopped(self, request: StopRequest) -> None: ...


_agents: dict[str, NodeAgent] = {}
_lock = threading.Lock()


def register_agent(agent: NodeAgent) -> None:
    with _lock:
        _agents[agent.node_name] = agent


def unregister_agent(node_name: str) -> None:
    with _lock:
        _agents.pop(node_name, None)


def _agent_for(node_name: str) -> NodeAgent:
    with _lock:
        agent = _agents.get(node_name)
    if agent is None:
        raise LookupError(f"no agent for node {node_name!r} in this process")
    return agent


def launch_attempt(payload: dict[str, Any]) -> None:
    spec = LaunchSpec.from_dict(payload)
    _agent_for(spec.node_name).ensure_running(spec)


def stop_attempt(payload: dict[str, Any]) -> None:
    request = StopRequest.from_dict(payload)
    _agent_for(request.node_name).ensure_stopped(request)


def declare(broker: dramatiq.Broker, node_name: str) -> str:
    """Declare the actors and the node's queue on ``broker``; returns the queue name."""
    queue = node_queue_name(node_name)
    for fn, name in ((launch_attempt, LAUNCH_ACTOR), (stop_attempt, STOP_ACTOR)):
        if name not in broker.actors:
            dramatiq.actor(actor_name=name, queue_name=queue, broker=broker, max_retries=3,
                           min_backoff=200, max_backoff=5000)(fn)
    broker.declare_queue(queue)
    return queue


def start_worker(broker: dramatiq.Broker, node_name: str, *, threads: int = 4) -> dramatiq.Worker:
    """A dramatiq worker consuming only this node's queue; idle, its threads sleep (``workers.quiet``)."""
    queue = declare(broker, node_name)
    worker = QuietWorker(broker, queues={queue}, worker_threads=threads)
    worker.start()
    return worker

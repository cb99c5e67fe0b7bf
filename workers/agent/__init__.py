"""The node agent: registers its host, heartbeats, re-adopts, and runs what its queue tells it to.

``Agent`` (:mod:`workers.agent.node`) composes one small piece per concern;
start reading there. Liveness in one paragraph (the service's side is
``queue_service.recovery``): the agent registers, takes back what its
runtimes still hold (:mod:`~workers.agent.adoption`), then heartbeats; the
answers name the attempts it must stop. If the service falls silent for
half the lease the agent stops every job itself (:mod:`~workers.agent.lease`),
so they are gone before the service can requeue them elsewhere. Exits the
service could not be told about are kept and re-sent
(:mod:`~workers.agent.reports`).
"""

from workers.agent.node import LOST_CONTACT, Agent

__all__ = ["LOST_CONTACT", "Agent"]

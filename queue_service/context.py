"""Everything a running service holds, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from queue_service.admission.cycle import PackerFactory, Repartitioner
from queue_service.admitter import Admitter, Feasibility
from queue_service.db.session import make_engine, make_sessionmaker
from queue_service.dispatch import Dispatcher, make_broker
from queue_service.group_commit import GroupCommitter
from queue_service.lifecycle import effects
from queue_service.services.fleet import FleetSize
from queue_service.settings import Settings
from queue_service.webhooks.sender import WebhookSender


def default_packer_factory() -> PackerFactory:
    """Every placement goes through the partitioner's packer (its default, best-measured policy)."""
    from partitioner.place import Packer

    return Packer


def default_repartitioner() -> Repartitioner:
    """Mode / MIG-layout changes of idle GPUs, for the first job that does not fit."""
    from partitioner.repartition import propose

    return propose


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    admitter: Admitter
    packer_factory: PackerFactory
    feasibility: Feasibility
    webhooks: WebhookSender
    submits: GroupCommitter  # single job submissions, many per transaction
    fleet: FleetSize = field(default_factory=FleetSize)  # the fleet's size, for the agents' heartbeat timing
    extras: dict[str, object] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, *, packer_factory: PackerFactory | None = None,
              admits: bool = True) -> ServiceContext:
        """The service's parts; ``admits=False``: its admitter only relays wakes (an API process beside
        ``gpuq serve --api-processes``' admitter process)."""
        engine = make_engine(settings.effective_database_url)
        sessions = make_sessionmaker(engine)
        dispatcher = Dispatcher(make_broker(settings.broker_url))
        packer_factory = packer_factory or default_packer_factory()
        admitter = Admitter(sessions=sessions, settings=settings, packer_factory=packer_factory,
                            repartition=default_repartitioner(), may_lead=admits)
        feasibility = Feasibility(packer_factory)
        webhooks = WebhookSender(sessions=sessions, settings=settings)
        # Effects after commit, in one place: every transaction's launches, stops and wake-ups.
        effects.install(sessions, effects.Sink(send=dispatcher.send, wake=admitter.wake,
                                               cluster_changed=feasibility.invalidate, job_events=webhooks.wake))
        return cls(settings, engine, sessions, dispatcher, admitter, packer_factory, feasibility, webhooks,
                   GroupCommitter(sessions))

    def start_background(self) -> None:
        """What runs beside the requests: the admitter (a cycle at once) and the webhook sender."""
        self.admitter.start()
        self.admitter.wake()
        self.webhooks.start()

    def stop_background(self) -> None:
        self.webhooks.stop()
        self.admitter.stop()  # a cycle in flight finishes and commits first

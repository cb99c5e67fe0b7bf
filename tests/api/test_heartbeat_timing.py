"""Heartbeat timing scales with the fleet (``services.fleet``, Nomad's rule): at most ``max_heartbeats_per_s``
from all agents together, the lease the same number of heartbeats long; a small fleet keeps the settings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from queue_service.db.models import Node
from queue_service.services.fleet import FleetSize, timing
from queue_service.settings import Settings
from tests import builders
from tests.api.helpers import auth
from workers.agent.lease import Lease
from workers.messages import HeartbeatAnswer


@pytest.mark.parametrize(("nodes", "heartbeat_s", "lease_s"), [
    (0, 5.0, 30.0), (10, 5.0, 30.0), (250, 5.0, 30.0), (500, 10.0, 60.0), (1000, 20.0, 120.0)])
def test_the_interval_grows_past_max_heartbeats_per_s(nodes, heartbeat_s, lease_s) -> None:
    settings = Settings(heartbeat_interval_s=5.0, node_lease_s=30.0, max_heartbeats_per_s=50.0)
    got = timing(nodes, settings)
    assert (got.heartbeat_s, got.lease_s) == (heartbeat_s, lease_s)
    assert nodes / got.heartbeat_s <= settings.max_heartbeats_per_s


def test_agents_are_told_the_fleets_timing_and_the_lease_follows_it(api, ctx, actors, monkeypatch) -> None:
    monkeypatch.setattr(ctx.settings, "max_heartbeats_per_s", 0.25)  # 2 nodes: one heartbeat each 8 s at most
    builders.register(api, actors.admin, "other", "h100-80gb:1")
    answer = builders.register(api, actors.agent, "n1", "h100-80gb:1")
    assert (answer["heartbeat_s"], answer["lease_s"]) == (8.0, 48.0)
    beat = api.post("/v1/agent/heartbeat", json={"node_name": "n1", "running": []}, headers=auth(actors.agent))
    assert beat.status_code == 200 and (beat.json()["heartbeat_s"], beat.json()["lease_s"]) == (8.0, 48.0)
    with ctx.sessions() as session:
        node = session.scalar(select(Node).where(Node.name == "n1"))
    assert node.lease_expires_at - node.last_heartbeat_at == timedelta(seconds=48)
    # the real agent keeps what it is told (at least four heartbeats per lease)
    lease = Lease(client=None, inventory=builders.inventory("n1"), heartbeat_s=5.0, lease_s=30.0,  # type: ignore[arg-type]
                  running=list, on_answer=lambda _answer: None, on_fence=lambda _s: None)
    lease.apply_timing(HeartbeatAnswer.model_validate(beat.json()))
    assert (lease.heartbeat_s, lease.lease_s) == (8.0, 48.0)


def test_the_fleet_is_counted_once_per_ttl(ctx, api, actors) -> None:
    fleet = FleetSize(ttl_s=3600)
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    with ctx.sessions() as session:
        assert fleet.count(session) == 1
    builders.register(api, actors.admin, "n2", "h100-80gb:1")
    with ctx.sessions() as session:
        assert fleet.count(session) == 1  # cached
        assert fleet.count(session, fresh=True) == 2  # a register reads it at once

"""Tokens for the lifecycle's API tests: one per role, and one agent token per node (each bound to its node)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from queue_service.context import ServiceContext
from queue_service.db.models import Role
from queue_service.services import tokens


@dataclass
class People:
    """Who calls the API in these tests; ``agent(node)`` is that node's agent (made on first use)."""

    ctx: ServiceContext
    admin: str
    operator: str
    viewer: str
    member_a: str  # member of project "alpha"
    member_b: str  # member of project "beta"
    agents: dict[str, str] = field(default_factory=dict)

    def agent(self, node_name: str) -> str:
        if node_name not in self.agents:
            with self.ctx.sessions() as session, session.begin():
                _row, self.agents[node_name] = tokens.create(session, role=Role.AGENT, name=f"agent-{node_name}",
                                                             node_name=node_name, actor="test")
        return self.agents[node_name]


@pytest.fixture
def people(ctx: ServiceContext) -> People:
    made = {}
    with ctx.sessions() as session, session.begin():
        for key, role, projects in (
            ("admin", Role.ADMIN, []), ("operator", Role.OPERATOR, []), ("viewer", Role.VIEWER, []),
            ("member_a", Role.MEMBER, ["alpha"]), ("member_b", Role.MEMBER, ["beta"]),
        ):
            _row, made[key] = tokens.create(session, role=role, name=key, projects=projects, actor="test")
    return People(ctx, **made)

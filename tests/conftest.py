"""Shared fixtures: a migrated database (SQLite, and PostgreSQL when reachable), a service, tokens.

``db_url`` is parametrized over both backends, so every test that uses it
(directly or through ``ctx`` / ``api``) runs on SQLite and on PostgreSQL.
PostgreSQL tests skip locally when it is not reachable and fail in CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from queue_service.app import create_app
from queue_service.context import ServiceContext
from queue_service.db.migrate import upgrade
from queue_service.db.models import Role
from queue_service.dispatch import make_broker
from queue_service.services import projects, tokens
from queue_service.settings import Settings
from tests.services import require_postgres

# Databases migrated once per session, copied for each test that needs a migrated one (``ctx``): running
# every migration again per test cost ~1.3 s on PostgreSQL and ~0.5 s on SQLite, hundreds of times.
_TEMPLATES: dict[str, str] = {}  # "sqlite": a migrated file; "postgres": a migrated database's name


def _admin_engine():
    return create_engine(require_postgres(), isolation_level="AUTOCOMMIT")


def _migrated_copy(db_url: str, scratch: Path) -> None:
    """Make the empty database ``db_url`` a migrated one: a copy of the session's template (made on first use)."""
    if db_url.startswith("sqlite:///"):
        target = Path(db_url.removeprefix("sqlite:///"))
        if target.exists():  # not the empty database a test starts with: migrate it the slow way
            upgrade(db_url)
            return
        if "sqlite" not in _TEMPLATES:
            path = scratch / "template.db"
            upgrade(f"sqlite:///{path}")
            _TEMPLATES["sqlite"] = str(path)
        with sqlite3.connect(_TEMPLATES["sqlite"]) as source, sqlite3.connect(target) as copy:
            source.backup(copy)  # consistent even if the template is in WAL mode
        return
    name = db_url.rsplit("/", 1)[1]
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            if "postgres" not in _TEMPLATES:
                template = f"gpuq_template_{secrets.token_hex(4)}"
                conn.execute(text(f'CREATE DATABASE "{template}"'))
                upgrade(db_url.rsplit("/", 1)[0] + f"/{template}")
                _TEMPLATES["postgres"] = template
            template = _TEMPLATES["postgres"]
            # A template may have no other sessions while it is copied (the migration's own may linger).
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'"
                              " AND pid <> pg_backend_pid()"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        admin.dispose()


def pytest_configure(config) -> None:
    # `gpuq serve` writes the client config (``$XDG_CONFIG_HOME/gpuq/client.json``) the CLI reads: each test
    # session (each xdist worker) gets its own, so servers of parallel tests, and the user's own file, never
    # meet. A test that needs a particular one sets XDG_CONFIG_HOME itself.
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="gpuq-tests-config-")


def pytest_sessionfinish(session, exitstatus) -> None:
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    if "gpuq-tests-config-" in config_home:  # the one pytest_configure made
        shutil.rmtree(config_home, ignore_errors=True)
    template = _TEMPLATES.pop("postgres", None)
    if template is not None:
        admin = _admin_engine()
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{template}"'))
        admin.dispose()


def _postgres_database() -> Iterator[str]:
    base = require_postgres()
    name = f"gpuq_test_{secrets.token_hex(4)}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gpuq.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gpuq.db'}"


@dataclass
class Actors:
    """Tokens of every role, for API tests.

    Every agent token speaks for one node: ``agent`` for node ``n1`` (the
    node most tests register), ``agent_for(name)`` for any other (made on
    first use, then reused).
    """

    admin: str
    operator: str
    viewer: str
    agent: str  # bound to node "n1"
    member_a: str  # member of project "alpha"
    member_b: str  # member of project "beta"
    mint: Callable[[str], str] = field(repr=False, default=lambda name: "")
    _agents: dict[str, str] = field(default_factory=dict, repr=False)

    def agent_for(self, node_name: str) -> str:
        """A token of role agent bound to ``node_name``."""
        if node_name == "n1":
            return self.agent
        if node_name not in self._agents:
            self._agents[node_name] = self.mint(node_name)
        return self._agents[node_name]

    @staticmethod
    def headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def agent_token(ctx: ServiceContext, node_name: str) -> str:
    """A fresh agent token bound to ``node_name``."""
    with ctx.sessions() as session, session.begin():
        _row, plain = tokens.create(session, role=Role.AGENT, name=f"agent-{node_name}", node_name=node_name,
                                    actor="test")
    return plain


@pytest.fixture
def ctx(db_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceContext]:
    """A migrated service context with projects default/alpha/beta (no admitter thread)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, broker_url="memory://")
    _migrated_copy(db_url, tmp_path_factory.getbasetemp())
    context = ServiceContext.build(settings)
    with context.sessions() as session, session.begin():
        for name in ("default", "alpha", "beta"):
            projects.ensure(session, name=name)
    yield context
    broker = make_broker("memory://")
    broker.flush_all()
    context.engine.dispose()


@pytest.fixture
def actors(ctx: ServiceContext) -> Actors:
    made = {}
    with ctx.sessions() as session, session.begin():
        for key, role, projs in (
            ("admin", Role.ADMIN, []), ("operator", Role.OPERATOR, []), ("viewer", Role.VIEWER, []),
            ("agent", Role.AGENT, []), ("member_a", Role.MEMBER, ["alpha"]), ("member_b", Role.MEMBER, ["beta"]),
        ):
            _row, made[key] = tokens.create(session, role=role, name=key, projects=projs, actor="test",
                                            node_name="n1" if role is Role.AGENT else None)
    return Actors(**made, mint=lambda name: agent_token(ctx, name))


@pytest.fixture
def api(ctx: ServiceContext) -> Iterator[TestClient]:
    """A TestClient on the app; admission cycles run only when a test calls ``ctx.admitter.run_once()``."""
    app = create_app(ctx, run_admitter=False)
    with TestClient(app) as client:
        yield client

"""The CLI against the app in-process: ``cli.Api`` talks to a TestClient (SQLite only; fast)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.core import _TyperParameter
from typer.testing import CliRunner, Result

from queue_service import cli
from queue_service.app import create_app
from queue_service.cli import coercion
from queue_service.context import ServiceContext
from queue_service.db.migrate import upgrade
from queue_service.db.models import Role
from queue_service.services import projects, tokens
from queue_service.settings import Settings

Gpuq = Callable[..., Result]


@pytest.fixture(autouse=True)
def plain_coercion(monkeypatch) -> None:
    """The CLI tests convert options as ``gpuq`` does (queue_service/cli/coercion.py), not through pydantic."""
    monkeypatch.setattr(_TyperParameter, "get_runtime_param", coercion.wrap(_TyperParameter.get_runtime_param))


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'gpuq.db'}"
    upgrade(url)
    context = ServiceContext.build(Settings(data_dir=tmp_path / "data", database_url=url, broker_url="memory://"))
    made = {}
    with context.sessions() as session, session.begin():
        for name in ("default", "alpha"):
            projects.ensure(session, name=name)
        for key, role, projs in (("admin", Role.ADMIN, []), ("member", Role.MEMBER, ["alpha"])):
            _row, made[key] = tokens.create(session, role=role, name=key, projects=projs, actor="test")
    with TestClient(create_app(context, run_admitter=False)) as client:
        client.headers["Authorization"] = f"Bearer {made['admin']}"
        yield client, made
    context.engine.dispose()


@pytest.fixture
def gpuq(app_client, monkeypatch) -> Gpuq:
    """``gpuq(*args, as_="admin")``: one CLI call against the app; ``.api`` is the TestClient."""
    client, made = app_client

    def call(*args: str, as_: str = "admin") -> Result:
        def init(self, server, tok) -> None:
            self.base, self.token, self.http = "http://testserver", made[as_], client
            client.headers["Authorization"] = f"Bearer {made[as_]}"
        monkeypatch.setattr(cli.Api, "__init__", init)
        try:
            return CliRunner().invoke(cli.app, list(args))
        finally:
            client.headers["Authorization"] = f"Bearer {made['admin']}"

    call.api = client  # type: ignore[attr-defined]
    return call

"""Schemathesis against the app's own OpenAPI document: no 5xx and no answer outside its documented schema.

Runs on PostgreSQL when it is reachable (where NUL bytes and integer
overflows used to be 500s), else on SQLite. The number of examples per
operation is bounded so the whole file stays well under a minute on two
cores; every call carries an admin token, so the routes run past their
role checks (admins may also speak for any node on the agent routes).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy import create_engine, text

from queue_service.app import create_app
from queue_service.context import ServiceContext
from queue_service.db.migrate import upgrade
from queue_service.db.models import Role
from queue_service.services import projects, tokens
from queue_service.settings import Settings
from tests.services import POSTGRES_URL, _port_open
from tests.support.builders import inventory

MAX_EXAMPLES = int(os.environ.get("GPUQ_SCHEMATHESIS_EXAMPLES", "12"))
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def _database(tmp: Path) -> Iterator[str]:
    if not _port_open("127.0.0.1", 5432):
        yield f"sqlite:///{tmp / 'gpuq.db'}"
        return
    name = f"gpuq_st_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceContext, str]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    for url in _database(tmp):
        settings_ = Settings(data_dir=tmp / "data", database_url=url, broker_url="memory://")
        upgrade(url)
        ctx = ServiceContext.build(settings_)
        with ctx.sessions() as session, session.begin():
            projects.ensure(session, name="default")
            _row, admin = tokens.create(session, role=Role.ADMIN, name="fuzz", actor="test")
        try:
            yield ctx, admin
        finally:
            ctx.engine.dispose()


@pytest.fixture(scope="module")
def st_schema(service: tuple[ServiceContext, str]):
    ctx, admin = service
    app = create_app(ctx, run_admitter=False)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:  # a node with GPUs, so submissions and agent reports reach the database
        client.post("/v1/agent/register", json={"inventory": inventory("n1", "h100-80gb:2").to_dict()},
                    headers={"Authorization": f"Bearer {admin}"})
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def admin_headers(service: tuple[ServiceContext, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {service[1]}"}


CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def test_no_server_error_and_answers_match_the_schema(st_schema, admin_headers: dict[str, str]) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in st_schema.get_all_operations()]
    assert len(operations) > 30, "the OpenAPI document lost its operations"
    for operation, mode in itertools.product(operations, MODES):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case) -> None:
            case.call_and_validate(headers=admin_headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            continue  # nothing invalid to generate for an operation without inputs
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected per operation, reported below
            failures.append(f"{operation.label} [{mode.value}]: {type(exc).__name__}: {str(exc)[:1500]}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])

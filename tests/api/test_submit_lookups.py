"""A transaction of submits (a group commit's batch) reads the project and the classes once.

Each submit read its project, the priority classes and the workload classes: a quarter of the group
committer's time in a PostgreSQL submit storm. They are read once per transaction now; a change an
operator commits meanwhile applies from the next transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select

from queue_service.api.schemas.jobs import JobCreate
from queue_service.auth import Principal
from queue_service.db.models import ApiToken, Role
from queue_service.services import jobs as job_service
from tests.api.helpers import auth
from tests.builders import job_body, register

_TABLES = ("projects", "priority_classes", "workload_classes")


@contextmanager
def counting_reads(engine) -> Iterator[dict[str, int]]:
    """How many SELECTs read FROM each of ``_TABLES`` while the block runs."""
    counts = dict.fromkeys(_TABLES, 0)

    def before(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            for table in _TABLES:
                if f"FROM {table}" in statement:
                    counts[table] += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _admin(ctx) -> Principal:
    with ctx.sessions() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.role == Role.ADMIN)).first()
        assert token is not None
        return Principal(token_id=token.id, name=token.name, role=Role.ADMIN)


def _unit(ctx, principal: Principal, **overrides):
    body = JobCreate.model_validate(job_body(**overrides))

    def work(session):
        job = job_service.submit(session, body=body, principal=principal, settings=ctx.settings, flush=False)
        return lambda: (job.id, job.priority)

    return work


def test_one_batch_reads_its_lookups_once(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    principal = _admin(ctx)
    gate = threading.Event()
    # a unit that waits holds the committer, so the next three queue up and run as one batch
    blocker = ctx.submits.submit(lambda _session: (gate.wait(10), lambda: None)[1])
    deadline = time.monotonic() + 10
    while not blocker.running() and time.monotonic() < deadline:  # its batch has begun, without the others
        time.sleep(0.01)
    batches = ctx.submits.batches
    with counting_reads(ctx.engine) as counts:
        futures = [ctx.submits.submit(_unit(ctx, principal)) for _ in range(3)]
        gate.set()
        results = [future.result(timeout=30) for future in futures]
        blocker.result(timeout=30)
    assert ctx.submits.batches == batches + 2  # the blocker's batch, then the three together
    assert len({job_id for job_id, _ in results}) == 3
    assert counts == dict.fromkeys(_TABLES, 1)


def test_a_class_change_applies_from_the_next_transaction(ctx, api, actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    principal = _admin(ctx)
    assert api.put("/v1/priority-classes/urgent", json={"value": 700}, headers=auth(actors.operator)).status_code == 200
    _, before = ctx.submits.submit(_unit(ctx, principal, priority_class="urgent")).result(timeout=30)
    assert api.put("/v1/priority-classes/urgent", json={"value": 900}, headers=auth(actors.operator)).status_code == 200
    _, after = ctx.submits.submit(_unit(ctx, principal, priority_class="urgent")).result(timeout=30)
    assert (before, after) == (700, 900)

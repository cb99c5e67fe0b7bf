"""The migration upgrades and downgrades cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from queue_service.db.migrate import downgrade, upgrade
from queue_service.db.models import Base
from queue_service.db.session import normalize_url

TABLES = {"projects", "api_tokens", "jobs", "attempts", "nodes", "gpus", "allocations", "audit_log", "log_chunks"}


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    upgrade(db_url)
    assert _tables(db_url) >= TABLES
    assert set(Base.metadata.tables) == _tables(db_url), "models and migrations must agree"
    downgrade(db_url, "base")
    assert _tables(db_url) == set()
    upgrade(db_url)
    assert _tables(db_url) >= TABLES


def test_live_slot_index_refuses_double_allocation(ctx) -> None:
    """The database itself refuses two live allocations of the same whole GPU."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    from queue_service.db.models import Allocation, Job, Node, Project

    with ctx.sessions() as session, session.begin():
        project = session.query(Project).filter_by(name="default").one()
        node = Node(name="n1")
        session.add(node)
        session.flush()
        jobs = [Job(name=f"j{i}", project_id=project.id, command=["true"], priority_class="normal", priority=500)
                for i in range(2)]
        session.add_all(jobs)
        session.flush()
        session.add(Allocation(job_id=jobs[0].id, attempt=1, node_id=node.id, kind="gpu", gpu_uuid="GPU-x", slot="gpu"))
    with pytest.raises(IntegrityError), ctx.sessions() as session, session.begin():
        session.add(Allocation(job_id=jobs[1].id, attempt=1, node_id=node.id, kind="gpu", gpu_uuid="GPU-x",
                               slot="gpu"))

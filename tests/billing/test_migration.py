"""Migration 0002 (billing) upgrades and downgrades on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from queue_service.db.migrate import downgrade, upgrade

BILLING_TABLES = {"usage_intervals", "gpu_prices", "gpu_samples"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_0002_upgrades_and_downgrades(db_url: str) -> None:
    upgrade(db_url, "0001")
    assert not BILLING_TABLES & _tables(db_url)
    upgrade(db_url, "0002")
    assert _tables(db_url) >= BILLING_TABLES
    downgrade(db_url, "0001")
    tables = _tables(db_url)
    assert not BILLING_TABLES & tables
    assert "allocations" in tables  # 0001 is untouched
    upgrade(db_url, "0002")
    assert _tables(db_url) >= BILLING_TABLES

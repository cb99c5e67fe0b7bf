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


def test_0018_derives_job_counts_from_the_job_days(db_url: str) -> None:
    """Jobs already rolled up are counted once per day under their previous day, gaps and models included."""
    from datetime import datetime

    from sqlalchemy import text

    from queue_service.db.session import normalize_url

    upgrade(db_url, "0017")
    engine = create_engine(normalize_url(db_url))
    rows = [("j1", 1, "h100"), ("j1", 1, "a100"), ("j1", 2, "h100"), ("j1", 5, "h100"), ("j2", 2, "h100")]
    try:
        with engine.begin() as conn:
            for job, day, model in rows:
                conn.execute(text(
                    "INSERT INTO usage_job_days (day, project_id, job_id, gpu_model, owner_token_id, workload, "
                    "labels_json) VALUES (:day, 'p', :job, :model, '', 'batch', '{}')"),
                    {"day": datetime(2026, 11, day), "job": job, "model": model})
        upgrade(db_url, "0018")
        with engine.connect() as conn:
            counts = sorted((datetime.fromisoformat(str(d)).day, datetime.fromisoformat(str(p)).year, n)
                            for d, p, n in conn.execute(text("SELECT day, prev_day, jobs FROM usage_job_counts")))
    finally:
        engine.dispose()
    # Nov 1: j1 first; Nov 2: j1 (after Nov 1) and j2 first; Nov 5: j1 after Nov 2.
    assert counts == [(1, 1970, 1), (2, 1970, 1), (2, 2026, 1), (5, 2026, 1)]
    downgrade(db_url, "0017")
    assert "usage_job_counts" not in _tables(db_url)


def test_0020_shards_rollups_and_job_counts_and_folds_them_back(db_url: str) -> None:
    """Rows already rolled up stay (shard 0), counts are derived again by job; the downgrade sums the shards."""
    from datetime import datetime

    from sqlalchemy import text

    from queue_service.billing import rollups
    from queue_service.db.session import normalize_url

    upgrade(db_url, "0018")
    engine = create_engine(normalize_url(db_url))
    rollup = ("INSERT INTO usage_rollups (hour, project_id, project_name, owner_token_id, workload, labels_hash, "
              "labels_json, gpu_model, gpu_seconds, block_seconds, mig_seconds, gpu_equivalent_seconds, "
              "gpu_memory_gib_seconds, cpu_seconds, ram_gib_seconds, cost, max_gpu_memory_mib, intervals{s}) VALUES "
              "(:hour, 'p', 'p', '', 'batch', '', '{{}}', 'h100', :g, 0, 0, :g, 0, 0, 0, :g, :m, 1{v})")
    hour = datetime(2026, 11, 1, 9)
    try:
        with engine.begin() as conn:
            conn.execute(text(rollup.format(s="", v="")), {"hour": hour, "g": 100.0, "m": 10})
            for job in ("j1", "j2"):
                conn.execute(text(
                    "INSERT INTO usage_job_days (day, project_id, job_id, gpu_model, owner_token_id, workload, "
                    "labels_json) VALUES (:day, 'p', :job, 'h100', '', 'batch', '{}')"),
                    {"day": datetime(2026, 11, 1), "job": job})
        upgrade(db_url, "0020")
        with engine.begin() as conn:
            counts = sorted(conn.execute(text("SELECT shard, jobs FROM usage_job_counts")).all())
            assert counts == sorted((rollups.shard(j), 1) for j in ("j1", "j2"))
            assert conn.execute(text("SELECT shard, gpu_seconds FROM usage_rollups")).all() == [(0, 100.0)]
            conn.execute(text(rollup.format(s=", shard", v=", 5")), {"hour": hour, "g": 20.0, "m": 30})
        downgrade(db_url, "0018")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT gpu_seconds, cost, max_gpu_memory_mib, intervals FROM usage_rollups"))
            assert rows.all() == [(120.0, 120.0, 30, 2)]
            assert conn.execute(text("SELECT sum(jobs) FROM usage_job_counts")).scalar_one() == 2
    finally:
        engine.dispose()


def test_0021_adds_the_delta_tables_and_folds_them_on_the_way_down(db_url: str) -> None:
    """Deltas appended at 0021 are not lost by a downgrade: they are added into the sums first."""
    from datetime import datetime

    from sqlalchemy import insert, text

    from queue_service.db.billing_models import UsageJobCountDelta, UsageRollup, UsageRollupDelta
    from queue_service.db.session import normalize_url

    upgrade(db_url, "0021")
    assert {"usage_rollup_deltas", "usage_job_count_deltas"} <= _tables(normalize_url(db_url))
    engine = create_engine(normalize_url(db_url))
    key = {"hour": datetime(2026, 11, 1, 9), "project_id": "p", "project_name": "p", "owner_token_id": "",
           "workload": "batch", "labels_hash": "", "labels_json": "{}", "gpu_model": "h100", "shard": 0,
           "block_seconds": 0, "mig_seconds": 0, "gpu_memory_gib_seconds": 0, "cpu_seconds": 0,
           "ram_gib_seconds": 0, "intervals": 1}
    try:
        with engine.begin() as conn:  # through the models' types: SQLite compares the stored datetime text
            for table, g, m in ((UsageRollup, 100.0, 10), (UsageRollupDelta, 20.0, 30), (UsageRollupDelta, 5.0, 1)):
                conn.execute(insert(table.__table__), {**key, "gpu_seconds": g, "gpu_equivalent_seconds": g,
                                                       "cost": g, "max_gpu_memory_mib": m})
            conn.execute(insert(UsageJobCountDelta.__table__), {
                "day": datetime(2026, 11, 1), "project_id": "p", "owner_token_id": "", "workload": "batch",
                "labels_hash": "", "labels_json": "{}", "prev_day": datetime(1970, 1, 1), "shard": 3, "jobs": 2})
        downgrade(db_url, "0020")
        assert not {"usage_rollup_deltas", "usage_job_count_deltas"} & _tables(normalize_url(db_url))
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT gpu_seconds, cost, max_gpu_memory_mib, intervals FROM usage_rollups"))
            assert rows.all() == [(125.0, 125.0, 30, 3)]
            assert conn.execute(text("SELECT shard, jobs FROM usage_job_counts")).all() == [(3, 2)]
    finally:
        engine.dispose()

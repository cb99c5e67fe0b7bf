"""Fixtures for fault tests: a fresh PostgreSQL database, a Redis database, Docker, and a ``Cluster``.

The Redis database is this xdist worker's own second one (``FAULTS_REDIS_DB``), flushed before and after.

Real services only: locally they skip when missing, in CI (``CI=true``) they fail (``tests/services.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _postgres_database
from tests.faults.cluster import FAULTS_REDIS_DB, LEASE_S, Cluster
from tests.services import require_docker, require_postgres, require_redis


def _flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()  # only this database number: other tests use others
    finally:
        client.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    base = require_redis()
    url = base.rsplit("/", 1)[0] + f"/{FAULTS_REDIS_DB}"
    _flush(url)
    yield url
    _flush(url)


@pytest.fixture
def docker_client():
    require_docker()
    import docker

    client = docker.from_env(timeout=30)
    yield client
    client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_postgres()
    yield from _postgres_database()


def make_cluster(tmp_path: Path, pg_url: str, redis_url: str, docker_client, *, lease_s: float = LEASE_S) -> Cluster:
    from tests.services import DOCKER_TEST_IMAGE

    return Cluster(tmp_path, database_url=pg_url, redis_url=redis_url, docker_client=docker_client,
                   image=DOCKER_TEST_IMAGE, lease_s=lease_s)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_url: str, docker_client) -> Iterator[Cluster]:
    made = make_cluster(tmp_path, pg_url, redis_url, docker_client)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def slow_fence_docker_cluster(tmp_path: Path, pg_url: str, redis_url: str, docker_client) -> Iterator[Cluster]:
    """A Docker cluster with a 30 s lease (container watchdogs fence after 15 s): room for an agent restart
    on a loaded box, where the interpreter alone may take seconds to start."""
    made = make_cluster(tmp_path, pg_url, redis_url, docker_client, lease_s=30.0)
    try:
        yield made
    finally:
        made.close()


def _process_cluster(tmp_path: Path, pg_url: str, redis_url: str, lease_s: float) -> Iterator[Cluster]:
    import os

    from tests.isolation.conftest import need

    need(os.geteuid() == 0, "process fault tests need root (cgroups, job users)")
    made = Cluster(tmp_path, database_url=pg_url, redis_url=redis_url, docker_client=None, image="",
                   runtime="process", lease_s=lease_s)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def process_cluster(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Cluster]:
    """A cluster whose agents run host processes (``--runtime process``): no Docker needed, root for cgroups.

    A 10 s lease: a shim fences its job 5 s after its agent's last renewal.
    """
    yield from _process_cluster(tmp_path, pg_url, redis_url, 10.0)


@pytest.fixture
def slow_fence_cluster(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Cluster]:
    """A process cluster with a 30 s lease (shims fence after 15 s): room for an agent restart on a
    loaded CI box, where the interpreter alone may take seconds to start."""
    yield from _process_cluster(tmp_path, pg_url, redis_url, 30.0)

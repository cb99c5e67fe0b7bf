"""Reachability of the real services integration tests need.

Locally a missing service skips the test with a visible reason; in CI
(``CI=true``) it fails, so a green CI always means the real thing ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_URL = os.environ.get("GPUQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Under pytest-xdist each worker gets its own pair of Redis database numbers (gw0: 15 and 14, gw1: 13
# and 12, ...): two workers' brokers would otherwise take each other's messages, and the fault tests
# flush theirs.
WORKER_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_DB = 15 - 2 * WORKER_INDEX
REDIS_URL = os.environ.get("GPUQ_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{REDIS_DB}")
DOCKER_TEST_IMAGE = os.environ.get("GPUQ_TEST_IMAGE", "gpuq-test-busybox:latest")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def missing(service: str, why: str) -> None:
    """Skip locally, fail in CI."""
    message = f"{service} not reachable: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


def require_postgres() -> str:
    if not _port_open("127.0.0.1", 5432):
        missing("PostgreSQL", "nothing listens on 127.0.0.1:5432")
    return POSTGRES_URL


def require_redis() -> str:
    if not _port_open("127.0.0.1", 6379):
        missing("Redis", "nothing listens on 127.0.0.1:6379")
    return REDIS_URL


def docker_available() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "no docker client on PATH (run .ci/docker-setup.sh)"
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"Docker engine not reachable ({exc.__class__.__name__}); run .ci/docker-setup.sh"
    try:
        client.images.get(DOCKER_TEST_IMAGE)
    except Exception:  # noqa: BLE001
        return False, f"test image {DOCKER_TEST_IMAGE} missing; run .ci/docker-setup.sh"
    return True, ""


def require_docker() -> str:
    ok, why = docker_available()
    if not ok:
        missing("Docker", why)
    return DOCKER_TEST_IMAGE


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)

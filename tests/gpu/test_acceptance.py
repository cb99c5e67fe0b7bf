"""The GPU acceptance check as tests (``pytest -m gpu``): each check of ``workers.doctor`` on this host's GPU.

Without a GPU (or the tool a check needs) each test is skipped with the
check's own "not available here: <why>", so the reason is visible in
``pytest -rs``. The whole module stays under the doctor's 8-minute budget;
it never changes MIG mode, never resets a GPU and leaves nothing running.
"""

from __future__ import annotations

import pytest

from workers.doctor import (
    NOT_AVAILABLE,
    OK,
    Host,
    check_docker_isolation,
    check_mps_compute,
    check_mps_daemon,
    check_mps_memory,
    check_nvml_inventory,
)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def host() -> Host:
    return Host()


@pytest.mark.parametrize("check", [check_nvml_inventory, check_mps_daemon, check_mps_compute, check_mps_memory,
                                   check_docker_isolation], ids=lambda c: c.__name__.removeprefix("check_"))
def test_gpu_acceptance(host: Host, check) -> None:
    result = check(host)
    if result.status == NOT_AVAILABLE:
        pytest.skip(f"{result.name}: not available here: {result.detail}")
    assert result.status == OK, f"{result.name}: {result.detail}"

"""Real cgroups and a real job user: these tests need root and writable cgroups (CI has both).

Locally without them they skip; with ``CI=true`` they fail instead, so a CI
machine that lost its cgroups cannot pass by skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.messages import LaunchSpec
from workers.runtime import cgroups, jobuser
from workers.runtime.process import ProcessRuntime


def need(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this: {why}")
    pytest.skip(why)


@pytest.fixture
def probe() -> Iterator[cgroups.Probe]:
    """Cgroups under a parent of this test's own, removed afterwards."""
    need(os.geteuid() == 0, "needs root")
    parent = f"gpuq-test-{secrets.token_hex(3)}"
    found = cgroups.probe(parent)
    need(found.mode == cgroups.ENFORCED, f"cgroups not writable here: {found.note}")
    yield found
    assert found.layout is not None
    parent_group = cgroups.JobCgroup(found.layout, parent)
    leftovers = [d for base in parent_group.dirs() for d in base.glob("*") if d.is_dir()]
    for d in parent_group.dirs():
        for child in d.glob("*"):
            if child.is_dir():
                child.rmdir()
        d.rmdir()
    assert not leftovers, f"attempt cgroups left behind: {leftovers}"


@pytest.fixture
def work_root() -> Iterator[Path]:
    """A work root the job user can reach (pytest's tmp dirs are root's 0700)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="gpuq-iso-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runtime(probe: cgroups.Probe, work_root: Path, tmp_path: Path) -> ProcessRuntime:
    return ProcessRuntime(work_dir=work_root / "work", state_dir=tmp_path / "shims", cgroups=probe,
                          job_user=jobuser.resolve("nobody"), pids_max=64)


def spec(command: list[str], **kw) -> LaunchSpec:
    return LaunchSpec(job_id=kw.pop("job_id", f"j{secrets.token_hex(3)}"), attempt=1, node_name="iso",
                      command=command, **kw)


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"

"""``--output`` / ``--error`` path patterns: expanded like Slurm's (%j %A %a %x %u %N %%), refused with the field
named when they cannot be, and written on the node by the shim as the job user, beside the logs the service keeps."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.isolation.conftest import need, spec
from tests.support.builders import job_body
from workers.messages import LaunchSpec, expand_output_path, output_pattern_problem
from workers.runtime import jobuser
from workers.runtime.base import ExitReason, LaunchError
from workers.runtime.process import ProcessRuntime


def test_every_code_expands_and_a_relative_path_is_the_working_directory_s() -> None:
    task = LaunchSpec(job_id="j42", attempt=2, node_name="n7", command=["true"], array_id="a1", array_index=3,
                      job_name="train/big", workdir="/home/ada/run/")
    assert expand_output_path("/o/%x-%j-%A_%a-%u@%N-100%%.log", task, user="ada") == \
        "/o/train_big-j42-a1_3-ada@n7-100%.log"
    assert expand_output_path("logs/%j.out", task, user="ada") == "/home/ada/run/logs/j42.out"
    single = LaunchSpec(job_id="j9", attempt=1, node_name="n1", command=["true"])
    assert expand_output_path("/o/%A.%a", single, user="u") == "/o/j9.0"


@pytest.mark.parametrize(("pattern", "workdir", "words"), [
    ("/o/%q.log", None, "unknown pattern %q"),
    ("/o/out%", None, "lone %"),
    ("out.log", None, "is relative"),
    ("/o/a\x00b", None, "NUL"),
    ("", None, "empty"),
    ("/o/dir/", None, "names a directory"),
])
def test_bad_patterns_say_why(pattern: str, workdir: str | None, words: str) -> None:
    problem = output_pattern_problem(pattern, workdir=workdir)
    assert problem is not None and words in problem, problem


def test_good_patterns_pass() -> None:
    assert output_pattern_problem("out-%j.log", workdir="/w") is None
    assert output_pattern_problem("/o/%x_%A_%a.%N.%u.%%", workdir=None) is None


def test_the_api_refuses_a_bad_pattern_naming_the_field(api, actors) -> None:
    h = actors.headers(actors.admin)
    for body, field in (({"output": "/o/%q"}, "output"), ({"error": "err.log"}, "error"),
                        ({"output": "/o/\x00"}, "output"), ({"output": "/o/x", "image": "busybox"}, "output")):
        response = api.post("/v1/jobs", json=job_body(**body), headers=h)
        assert response.status_code == 422, response.text
        assert field in response.text, response.text
    ok = api.post("/v1/jobs", json=job_body(output="out-%j.log", error="/tmp/e-%j", workdir="/tmp"), headers=h)
    assert ok.status_code == 201, ok.text
    assert (ok.json()["output"], ok.json()["error"]) == ("out-%j.log", "/tmp/e-%j")


# -- on the node: real files, the real shim -----------------------------------------------------------------------

@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[ProcessRuntime, Path]]:
    """A process runtime that runs jobs as ``nobody`` (root only), and a root it can reach (not pytest's 0700 tmp)."""
    need(os.geteuid() == 0, "needs root (the shim opens the files as the job user)")
    root = Path(tempfile.mkdtemp(prefix="gpuq-out-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    yield ProcessRuntime(work_dir=root / "work", state_dir=tmp_path / "shims", job_user=jobuser.resolve("nobody")), root
    shutil.rmtree(root, ignore_errors=True)


def _run(runtime: ProcessRuntime, launch: LaunchSpec, tmp_path: Path):
    out, err = tmp_path / "spool.out", tmp_path / "spool.err"
    handle = runtime.launch(launch, stdout_path=out, stderr_path=err)
    status = runtime.wait(handle, 20)
    runtime.cleanup(handle)
    return status, out, err


def test_the_job_s_output_lands_in_its_files_and_in_the_logs(node: tuple[ProcessRuntime, Path],
                                                             tmp_path: Path) -> None:
    runtime, work_root = node
    shared = work_root / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # the job user's own directory tree
    launch = spec(["sh", "-c", "echo out-line; echo err-line >&2"], job_name="demo",
                  output=f"{shared}/%x/%j.out", error=f"{shared}/%x/%j.err")
    status, out, err = _run(runtime, launch, tmp_path)
    assert status is not None and status.reason is ExitReason.EXITED and status.exit_code == 0, status
    made = shared / "demo"
    assert (made / f"{launch.job_id}.out").read_text() == "out-line\n"
    assert (made / f"{launch.job_id}.err").read_text() == "err-line\n"
    assert made.stat().st_uid == (made / f"{launch.job_id}.out").stat().st_uid != 0, "made as the job user"
    assert out.read_text() == "out-line\n" and err.read_text() == "err-line\n", "the service still gets its logs"
    # --output alone takes stderr too (Slurm's default)
    both = spec(["sh", "-c", "echo a; echo b >&2"], output=f"{shared}/both-%j")
    status, _out, _err = _run(runtime, both, tmp_path)
    assert status is not None and status.exit_code == 0, status
    assert sorted((shared / f"both-{both.job_id}").read_text().split()) == ["a", "b"]


def test_a_symlink_or_a_file_the_job_user_cannot_write_is_refused(node: tuple[ProcessRuntime, Path],
                                                                   tmp_path: Path) -> None:
    runtime, work_root = node
    victim = work_root / "victim"
    victim.write_text("precious\n")  # root's, 0644: the job user cannot write it
    shared = work_root / "trap"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "out.log").symlink_to(victim)
    for target, words in ((f"{shared}/out.log", "symbolic link"), (f"{victim}", "cannot write"),
                          (f"{work_root}/rootonly/x.log", "cannot write")):
        launch = spec(["sh", "-c", "echo overwritten"], output=target)
        with pytest.raises(LaunchError, match=words):
            _run(runtime, launch, tmp_path)
    assert victim.read_text() == "precious\n"
    assert not (work_root / "rootonly").exists(), "no directory made where the job user cannot make one"

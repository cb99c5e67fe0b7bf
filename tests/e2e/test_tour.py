"""The README's tour, run as it is written, against a live ``gpuq serve`` from a fresh data dir.

The CLI is given no ``GPUQ_*`` variable: it must find the server (a random
port, a temporary data dir) through the client config ``gpuq serve`` wrote.
Every example job must succeed from the directory it was submitted in.
Also ``gpuq run``: its exit code, its streamed output, Ctrl-C cancelling the
job, and a working directory the node lacks failing the attempt by name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_embedded import REPO, Server

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
BIN = Path(sys.executable).parent


def _tour_block() -> str:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- tour: .*? -->\n```sh\n(.*?)```", readme, re.S)
    assert found, "the README's tour block (marked <!-- tour: ... -->) is missing"
    return found.group(1)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[Server, dict[str, str], Path]]:
    tmp = tmp_path_factory.mktemp("tour")
    home = tmp / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    server = Server(tmp, None, extra_env=env)
    shell_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GPUQ_")}, **env,
                 "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    try:
        yield server, shell_env, tmp
    finally:
        server.stop()


def _final(server: Server, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = server.http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_readme_tour_runs_literally(live) -> None:
    server, env, _tmp = live
    # Beside the README's /tmp/gpuq-tour, not in pytest's private tmp: an agent running as root starts
    # jobs as the unprivileged job user, who must be able to enter the directory (as /tmp/... allows).
    base = Path(tempfile.mkdtemp(prefix="gpuq-tour-"))
    base.chmod(0o755)
    tour_dir = base / "gpuq-tour"
    script = _tour_block().replace("/tmp/gpuq-tour", str(tour_dir))
    # The clone's venv: the one running this test (CI and a local checkout both install into .venv).
    script = script.replace("source .venv/bin/activate", f"export PATH={BIN}:$PATH")
    assert (BIN / "gpuq").exists(), "gpuq is not installed in the test's environment"
    assert "--port" not in script and "GPUQ_" not in script, "the tour relies on the client config"
    try:
        _tour(server, env, script, tour_dir)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _tour(server: Server, env: dict[str, str], script: str, tour_dir: Path) -> None:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "training []" in done.stdout  # gpuq run streamed the job's output
    assert re.search(r"^gpuq_\S+$", done.stdout, re.M), "the member token is printed"
    jobs = server.http.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert len(jobs) == 5, [j["command"] for j in jobs]
    for job in jobs:
        job = _final(server, job["id"])
        assert job["workdir"] == str(tour_dir), job
        if job["command"][0] == "sleep":
            assert job["state"] == "cancelled"
        else:
            assert job["state"] == "succeeded", (job["command"], job["reason"])
    outputs = {" ".join(j["command"][1:]): server.http.get(f"/v1/jobs/{j['id']}/logs").json()["stdout"]
               for j in jobs}
    assert outputs["train.py --epochs 3"] == "training ['--epochs', '3']\n"
    script_job = next(j for j in jobs if j["command"][-1].endswith("preprocess.sh"))
    assert script_job["resources"]["cpus"] == 2 and script_job["time_limit_s"] == 600
    assert server.http.get(f"/v1/jobs/{script_job['id']}/logs").json()["stdout"] == f"preprocessing in {tour_dir}\n"


def _gpuq(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gpuq"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_run_streams_and_exits_with_the_jobs_code(live) -> None:
    _server, env, tmp = live
    done = _gpuq(env, "run", "--time-limit", "1m", "--", "sh", "-c", "echo out; echo err >&2; exit 3", cwd=tmp)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "out\n" and "err\n" in done.stderr and "exit code 3" in done.stderr


def test_missing_workdir_fails_the_attempt_by_name(live) -> None:
    _server, env, tmp = live
    done = _gpuq(env, "run", "--chdir", "/no/such/dir", "--", "true", cwd=tmp)
    assert done.returncode == 1
    assert "working directory /no/such/dir does not exist on node e2e-node" in done.stderr, done.stderr


def test_ctrl_c_cancels_the_job(live) -> None:
    server, env, tmp = live
    proc = subprocess.Popen([str(BIN / "gpuq"), "run", "--name", "interrupt-me", "--", "sleep", "60"], cwd=tmp,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        job = None
        while time.monotonic() < deadline:
            found = [j for j in server.http.get("/v1/jobs", params={"limit": 100}).json()["data"]
                     if j["name"] == "interrupt-me"]
            if found and found[0]["state"] == "running":
                job = found[0]
                break
            time.sleep(0.1)
        assert job is not None, "the job never ran"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "cancelled" in err, err
    assert _final(server, job["id"])["state"] == "cancelled"

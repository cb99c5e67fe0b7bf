"""As root, a process job runs as a uid of its own: it cannot read the data directory (token, database,
other jobs' logs), another job's work directory or environment, nor signal another job.

A real ``gpuq serve`` (SQLite, the local agent, simulated GPUs) whose data directory sits in a
world-traversable place, so only gpuq's own permissions stand between the jobs and its files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.e2e.test_embedded import Server
from tests.isolation.conftest import need

PY = "/usr/bin/python3"  # the job users cannot reach the repository's venv

ATTACK = r"""
import glob, os, signal, sys
data, victim = sys.argv[1], sys.argv[2]
def read(path):
    try:
        open(path, 'rb').read(1)
        return 'READ'
    except PermissionError:
        return 'denied'
    except FileNotFoundError:
        return 'missing'
print('token', read(f'{data}/admin.token'))
print('db', read(f'{data}/gpuq.db'))
print('log', read(f'{data}/agent/logs/{victim}/1.0.stdout'))
print('workdir', read(os.path.join(os.path.dirname(os.getcwd()), f'{victim}-1-0', 'note')))
leaked = killed = 0
for d in glob.glob('/proc/[0-9]*'):
    try:
        env = open(d + '/environ', 'rb').read()
    except OSError:
        continue
    if b'hunter2' in env:
        leaked += 1
        try:
            os.kill(int(d[6:]), signal.SIGKILL)
            killed += 1
        except OSError:
            pass
print('leaked', leaked, 'killed', killed, 'uid', os.getuid())
"""


def test_a_job_cannot_read_gpuq_files_or_touch_another_job(work_root: Path) -> None:
    need(os.geteuid() == 0, "needs root (the agent switches users only as root)")
    server = Server(work_root, None, extra_env={"GPUQ_JOB_WORK_DIR": str(work_root / "jobs")})
    try:
        data = server.data_dir
        assert data.stat().st_mode & 0o777 == 0o700, "the data directory is root's alone"
        victim = server.http.post("/v1/jobs", json={
            "name": "victim", "project": "default", "env": {"SECRET": "hunter2"}, "resources": {"gpus": 1},
            "command": ["sh", "-c", "echo private > note; echo started; sleep 4; echo done"],
        }).json()["id"]
        deadline = 30
        t0 = time.monotonic()
        while server.http.get(f"/v1/jobs/{victim}").json()["state"] != "running":
            assert time.monotonic() - t0 < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        attacker = server.http.post("/v1/jobs", json={
            "name": "attacker", "project": "default", "resources": {"gpus": 1},
            "command": [PY, "-c", ATTACK, str(data), victim],
        }).json()["id"]
        final = {}
        t0 = time.monotonic()
        while len(final) < 2:
            for job_id in (victim, attacker):
                job = server.http.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
                    final[job_id] = job
            assert time.monotonic() - t0 < 40, final
            time.sleep(0.2)
        out = server.http.get(f"/v1/jobs/{attacker}/logs").json()
        assert final[attacker]["state"] == "succeeded", out
        report = dict(line.split(" ", 1) for line in out["stdout"].splitlines())
        assert report["token"] == "denied" and report["db"] == "denied" and report["log"] == "denied", report
        assert report["workdir"] == "denied", report
        assert report["leaked"].startswith("0 killed 0"), report
        assert not report["leaked"].endswith(" uid 0"), "the job ran as root"
        assert final[victim]["state"] == "succeeded", "the other job was not disturbed"
        assert "done" in server.http.get(f"/v1/jobs/{victim}/logs").json()["stdout"]
    finally:
        server.stop()

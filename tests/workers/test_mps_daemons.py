"""The agent's one MPS owner (workers.gpu.mps.MpsDaemons) for both runtimes, with the stub control binary.

Start once per GPU / MIG instance whichever runtime asks, restart after it
dies (its block jobs failed with the reason), stop when the device leaves
shared mode and at shutdown, the env each process block job gets, and no
block job started on a device whose daemon is not ready.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.workers.test_agent_recovery import FakeClient
from workers.agent import Agent
from workers.agent.mps import MpsKeeper
from workers.agent.runs import RunBook
from workers.gpu.mps import READY, ClientUsers, MpsControl, MpsDaemons, MpsUnavailable, pid_alive
from workers.messages import GpuInfo, LaunchSpec, MigDeviceInfo, NodeInventory
from workers.runtime.base import ExitReason
from workers.runtime.docker import DockerRuntime, container_config
from workers.runtime.jobuser import JobUser
from workers.runtime.process import ProcessRuntime

STUB_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "bin"
GPU = "GPU-11111111-2222-3333-4444-555555555555"
MIG = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def calls(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("PATH", f"{STUB_DIR}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GPUQ_MPS_STUB_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("GPUQ_MPS_STUB_FAIL", str(tmp_path / "fail"))
    return tmp_path / "calls.log"


@pytest.fixture
def owner(calls, tmp_path):
    mps = MpsDaemons(MpsControl(root=tmp_path / "mps", isolate_shm=False, start_timeout_s=5.0))
    yield mps
    mps.stop_all()


def starts(calls: Path, uuid: str) -> int:
    return sum(1 for line in calls.read_text().splitlines() if line.startswith("args=[-d]") and uuid in line)


def block(uuid: str = GPU, job: str = "j1", command: tuple[str, ...] = ("env",), **kw) -> LaunchSpec:
    return LaunchSpec(job_id=job, attempt=1, node_name="n1", command=list(command), gpu_uuids=[uuid], blocks=25,
                      gpu_memory_mib=10240, grace_s=0.5, **kw)


def daemon_pid(owner: MpsDaemons, uuid: str) -> int:
    return int((owner.control.daemon(uuid).pipe_dir / "nvidia-cuda-mps-control.pid").read_text())


def kill_daemon(owner: MpsDaemons, uuid: str) -> None:
    pid = daemon_pid(owner, uuid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while owner.control.is_running(uuid) and time.monotonic() < deadline:
        time.sleep(0.02)


def run_process(rt: ProcessRuntime, s: LaunchSpec, tmp_path: Path) -> tuple[ExitReason, str]:
    out = tmp_path / f"{s.job_id}.out"
    handle = rt.launch(s, stdout_path=out, stderr_path=tmp_path / f"{s.job_id}.err")
    status = rt.wait(handle, 10)
    rt.cleanup(handle)
    assert status is not None
    return status.reason, out.read_text()


def test_one_daemon_per_device_shared_by_both_runtimes_and_the_env_of_a_process_block_job(owner, calls, tmp_path):
    process = ProcessRuntime(work_dir=tmp_path / "work", mps=owner)
    docker = DockerRuntime(client=object(), mps=owner)  # the engine is never touched here
    reason, out = run_process(process, block(), tmp_path)
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    d = owner.daemon(GPU)
    assert reason is ExitReason.EXITED
    assert env["CUDA_VISIBLE_DEVICES"] == GPU
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(d.pipe_dir)
    assert env["CUDA_MPS_LOG_DIRECTORY"] == str(d.log_dir)
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=10240M"
    # the Docker runtime asks the same owner: the daemon the process job started, not a second one
    assert docker._mps_daemon(block(job="j2", image="img")) == d
    run_process(process, block(job="j3"), tmp_path)
    assert starts(calls, GPU) == 1
    # a MIG instance is a device of its own: its own daemon, pipe and log dirs
    m = docker._mps_daemon(block(MIG, job="j4", image="img"))
    assert m.pipe_dir != d.pipe_dir and m.log_dir != d.log_dir and starts(calls, MIG) == 1
    assert f"CUDA_VISIBLE_DEVICES={MIG} " in calls.read_text()
    assert owner.status() == {GPU: READY, MIG: READY}


def test_a_dead_daemon_is_restarted_and_its_block_jobs_fail_with_the_reason(owner, calls, tmp_path):
    book = RunBook(tmp_path)
    keeper = MpsKeeper(mps=owner, book=book, inventory=lambda: NodeInventory("n1", "h", "b", 1, 1))
    owner.ensure(GPU)
    owner.ensure(MIG)
    on_gpu, on_mig, whole = book.admit(block()), book.admit(block(MIG, job="j2")), book.admit(
        LaunchSpec(job_id="j3", attempt=1, node_name="n1", command=["true"], gpu_uuids=[GPU]))
    assert on_gpu and on_mig and whole
    kill_daemon(owner, GPU)
    died = keeper.check()
    assert list(died) == [GPU] and "died" in died[GPU]
    assert on_gpu.stop_event.is_set() and on_gpu.stop_as is ExitReason.LOST
    assert f"the MPS daemon of {GPU} died" in (on_gpu.stop_reason or "")
    assert not on_mig.stop_event.is_set() and not whole.stop_event.is_set()
    assert starts(calls, GPU) == 2 and owner.control.is_running(GPU), "restarted"
    assert owner.status()[GPU] == READY
    assert keeper.check() == {}, "a living daemon is left alone"


def test_a_daemon_that_cannot_start_takes_no_block_job_and_is_retried(calls, tmp_path):
    (tmp_path / "fail").touch()
    owner = MpsDaemons(MpsControl(root=tmp_path / "mps", isolate_shm=False), retry_s=0.0)
    process = ProcessRuntime(work_dir=tmp_path / "work", mps=owner)
    marker = tmp_path / "ran"
    with pytest.raises(MpsUnavailable, match=f"MPS on {GPU} failed: .*no CUDA-capable device"):
        process.launch(block(command=("touch", str(marker))), stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    assert not marker.exists(), "the job never ran without its limits"
    assert owner.status()[GPU].startswith("failed: ") and "no CUDA-capable device" in owner.status()[GPU]
    with pytest.raises(MpsUnavailable):
        DockerRuntime(client=object(), mps=owner)._mps_daemon(block(image="img"))
    assert owner.check() == {} and owner.status()[GPU].startswith("failed: "), "retried: still failing"
    (tmp_path / "fail").unlink()
    assert owner.check() == {}
    try:
        assert owner.status() == {}, "a failed start is retried every retry_s: it starts, so no status"
        assert not owner.control.is_running(GPU), "and is not left running: no block job needs it yet"
    finally:
        owner.stop_all()


def test_daemon_stops_when_the_device_leaves_shared_mode_and_at_shutdown(owner, calls, tmp_path):
    book = RunBook(tmp_path)
    keeper = MpsKeeper(mps=owner, book=book, inventory=lambda: NodeInventory("n1", "h", "b", 1, 1))
    owner.ensure(GPU)
    owner.ensure(MIG)
    gpu_pid = daemon_pid(owner, GPU)
    run = book.admit(block())
    assert run is not None
    exclusive = LaunchSpec(job_id="x", attempt=1, node_name="n1", command=["true"], gpu_uuids=[GPU])
    keeper.before_launch(exclusive)
    assert owner.control.is_running(GPU), "a block job still runs on it: the daemon stays"
    book.end(run)
    keeper.before_launch(exclusive)
    assert not owner.control.is_running(GPU) and GPU not in owner.status(), "left shared mode: stopped"
    assert not pid_alive(gpu_pid), "the daemon process is gone"
    assert "cmd=quit" in calls.read_text()
    keeper.shutdown(keep=set())
    assert not owner.control.is_running(MIG) and owner.running() == set(), "nothing left running"


def test_mig_carving_on_a_gpu_stops_its_instances_idle_daemons(owner, tmp_path):
    mig = MigDeviceInfo(uuid=MIG, profile="1g.10gb", profile_id=19, start=0, size=1, memory_mib=9984, sm_count=16)
    gpu = GpuInfo(uuid=GPU, index=0, name="NVIDIA H100 80GB HBM3", model="h100-80gb", memory_mib=81559,
                  sm_count=132, mig_enabled=True, mig_devices=[mig])
    book = RunBook(tmp_path)
    keeper = MpsKeeper(mps=owner, book=book, inventory=lambda: NodeInventory("n1", "h", "b", 1, 1, gpus=[gpu]))
    carve = LaunchSpec(job_id="c", attempt=1, node_name="n1", command=["true"], gpu_uuids=[GPU],
                       mig_slices=[{"index": 0, "gpu_uuid": GPU, "profile": "3g.40gb", "start": 4}])
    owner.ensure(MIG)
    run = book.admit(block(MIG))
    keeper.before_carve(carve)
    assert owner.control.is_running(MIG), "a block job still runs on the instance: its daemon stays"
    assert run is not None
    book.end(run)
    keeper.before_carve(carve)
    assert not owner.control.is_running(MIG) and owner.status() == {}


def test_agent_reports_mps_status_and_a_failed_daemon_loses_the_attempt(owner, calls, tmp_path):
    class Client(FakeClient):
        def __init__(self) -> None:
            super().__init__()
            self.mps: list[dict | None] = []

        def heartbeat(self, node_name, *, running=None, mps=None, timeout_s=None):
            self.mps.append(mps)
            return super().heartbeat(node_name, running=running, timeout_s=timeout_s)

    client = Client()
    gpu = GpuInfo(uuid=GPU, index=0, name="NVIDIA H100 80GB HBM3", model="h100-80gb", memory_mib=81559, sm_count=132)
    inventory = NodeInventory("n1", "h", "b", 2, 1024, gpus=[gpu], gpu_source="nvml")
    process = ProcessRuntime(work_dir=tmp_path / "work", state_dir=tmp_path / "shims", mps=owner)
    agent = Agent(client=client, runtimes={"process": process}, inventory=inventory, work_dir=tmp_path / "agent",
                  heartbeat_s=0.1)
    assert agent.mps.mps is owner, "the agent finds the runtimes' owner"
    agent.start(register_timeout_s=5)
    try:
        (tmp_path / "fail").touch()
        agent.ensure_running(block(job="bad", command=("touch", str(tmp_path / "ran"))))
        _wait(lambda: client.exits)
        assert client.exits[0]["reason"] == ExitReason.LOST and "MPS on" in client.exits[0]["message"]
        assert not (tmp_path / "ran").exists()
        _wait(lambda: any(m and m.get(GPU, "").startswith("failed: ") for m in client.mps))
        (tmp_path / "fail").unlink()
        agent.ensure_running(block(job="good", command=("true",)))
        _wait(lambda: len(client.exits) == 2)
        assert client.exits[1]["reason"] == ExitReason.EXITED
        _wait(lambda: [m for m in client.mps if m is not None][-1] == {GPU: READY})
        after_ready = len(client.mps)
        _wait(lambda: len(client.mps) > after_ready)  # the next heartbeat (0.1 s), whenever the box lets it run
        assert client.mps[-1] is None, "an unchanged status is not sent again"
        sent = [m for m in client.mps if m is not None]
        assert all(a != b for a, b in itertools.pairwise(sent)), "each one sent is a change"
    finally:
        agent.shutdown(stop_jobs=True, grace_s=0.5)
    assert not owner.control.is_running(GPU), "agent shutdown leaves no daemon running"


def _wait(cond, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (per-device MPS uids, chown)")
def test_block_jobs_of_one_device_share_its_mps_uid_others_keep_their_own(calls, tmp_path):
    uids = range(900_000_100, 900_000_110)
    user = JobUser("gpuq-job", uids.start, 65534, switch=True, uids=uids)
    owner = MpsDaemons(MpsControl(root=tmp_path / "mps", isolate_shm=False),
                       users=ClientUsers(user.uid, user.gid, user.uids))
    work = Path("/var/tmp") / f"gpuq-test-mps-{uuidlib.uuid4().hex[:8]}"  # traversable by the job uids
    process = ProcessRuntime(work_dir=work / "work", state_dir=tmp_path / "shims", job_user=user, mps=owner)
    try:
        gpu_uid, mig_uid = owner.daemon(GPU).uid, owner.daemon(MIG).uid
        assert (gpu_uid, mig_uid) == (uids[-1], uids[-2]), "devices take theirs from the top of the range"
        outs = [run_process(process, block(job=f"b{i}", command=("id", "-u")), tmp_path)[1].strip() for i in (1, 2)]
        assert outs == [str(gpu_uid)] * 2, "both block jobs on the GPU run as its one MPS uid"
        d = owner.daemon(GPU)
        assert d.pipe_dir.stat().st_uid == gpu_uid and d.pipe_dir.stat().st_mode & 0o777 == 0o700
        plain = LaunchSpec(job_id="p1", attempt=1, node_name="n1", command=["id", "-u"], gpu_uuids=[GPU])
        assert run_process(process, plain, tmp_path)[1].strip() == str(uids.start), "a per-attempt uid"
        cfg = container_config(block(image="img"), mps_daemon=d)
        assert cfg["user"] == f"{gpu_uid}:65534", "a block container runs as the device's MPS uid too"
    finally:
        owner.stop_all()
        shutil.rmtree(work, ignore_errors=True)

"""Agent liveness on fakes (no I/O): re-adoption, stale stops, self-fencing, unreported exits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from workers.agent import LOST_CONTACT, Agent
from workers.client import ServiceUnavailable
from workers.messages import (
    AdoptAnswer,
    ExitedAnswer,
    HeartbeatAnswer,
    LaunchSpec,
    LogsAnswer,
    NodeInventory,
    RegisterAnswer,
    StartedAnswer,
)
from workers.runtime.base import Adopted, ExitReason, ExitStatus


class FakeRuntime:
    name = "docker"

    def __init__(self, adopted: list[Adopted] = ()) -> None:
        self.adopted = list(adopted)
        self.running: dict[str, threading.Event] = {}
        self.codes: dict[str, int] = {}
        self.stopped: list[str] = []
        self.removed: list[str] = []

    def launch(self, spec, *, stdout_path, stderr_path) -> str:
        handle = f"h-{spec.job_id}-{spec.attempt}"
        self.running[handle] = threading.Event()
        return handle

    def wait(self, handle, timeout_s=None):
        ended = self.running.setdefault(handle, threading.Event())
        if ended.wait(timeout_s or 0):
            return ExitStatus(self.codes.get(handle, 0), ExitReason.EXITED)
        return None

    def stop(self, handle, *, grace_s) -> None:
        self.stopped.append(handle)
        self.codes[handle] = 143
        self.running.setdefault(handle, threading.Event()).set()

    def collect_logs(self, handle, *, stdout_path, stderr_path) -> None:
        pass

    def cleanup(self, handle) -> None:
        self.removed.append(handle)

    def adopt(self, node_name):
        return self.adopted


class FakeClient:
    """The ServiceClient's surface, answering with the wire contract's models."""

    def __init__(self) -> None:
        self.down = False
        self.exits: list[dict] = []
        self.adopt_answer: dict = {"keep": [], "stop": []}
        self.stale: list[dict] = []
        self.registrations = 0

    def _check(self) -> None:
        if self.down:
            raise ServiceUnavailable("down")

    def register(self, inventory):
        self._check()
        self.registrations += 1
        return RegisterAnswer(node_id="n1", lease_s=2.0, heartbeat_s=0.1)

    def heartbeat(self, node_name, *, running=None, timeout_s=None):
        self._check()
        return HeartbeatAnswer.model_validate({"known": True, "lease_s": 2.0, "heartbeat_s": 0.1,
                                               "stale": self.stale})

    def adopt(self, node_name, attempts):
        self._check()
        return AdoptAnswer.model_validate({"lease_s": 2.0, "heartbeat_s": 0.1, **self.adopt_answer})

    def claim(self, spec):
        self._check()
        return StartedAnswer(state="running")

    def exited(self, spec, *, exit_code, reason, message="", stop_cause=None, node_fault=False):
        self._check()
        self.exits.append({"job_id": spec.job_id, "attempt": spec.attempt, "exit_code": exit_code,
                           "reason": reason, "message": message, **({"stop_cause": stop_cause} if stop_cause else {})})
        return ExitedAnswer(state="succeeded", finalized=True)

    def logs(self, spec, *, stream, offset, data):
        self._check()
        return LogsAnswer(end=offset + len(data))


def make_agent(tmp_path: Path, runtime: FakeRuntime, client: FakeClient) -> Agent:
    inventory = NodeInventory(node_name="n1", hostname="n1", boot_id="b", cpus=2, memory_mib=1024)
    return Agent(client=client, runtimes={"docker": runtime}, inventory=inventory, work_dir=tmp_path)


def spec(job: str, attempt: int = 1) -> LaunchSpec:
    return LaunchSpec(job_id=job, attempt=attempt, node_name="n1", command=["true"], image="img", grace_s=0.1)


def until(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_restart_keeps_current_attempts_and_removes_stale_ones(tmp_path) -> None:
    runtime = FakeRuntime([Adopted("cur", 2, "h-cur"), Adopted("old", 1, "h-old")])
    client = FakeClient()
    client.adopt_answer = {
        "keep": [{"job_id": "cur", "attempt": 2, "replica": 0, "state": "running", "elapsed_s": 1.0,
                  "spec": spec("cur", 2).to_dict()}],
        "stop": [{"job_id": "old", "attempt": 1, "replica": 0}],
    }
    agent = make_agent(tmp_path, runtime, client)
    agent.start()
    try:
        assert runtime.stopped == ["h-old"] and runtime.removed == ["h-old"]
        assert agent.running() == [("cur", 2, 0)]
        # the adopted container exits (setdefault: the supervisor may not have waited on it yet): reported once
        runtime.running.setdefault("h-cur", threading.Event()).set()
        until(lambda: client.exits)
        until(lambda: "h-cur" in runtime.removed)
        assert client.exits == [{"job_id": "cur", "attempt": 2, "exit_code": 0, "reason": "exited", "message": ""}]
        agent.ensure_running(spec("cur", 2))  # a late duplicate launch is ignored
        assert agent.running() == []
    finally:
        agent.shutdown()


def test_heartbeat_stale_answer_stops_the_attempt(tmp_path) -> None:
    runtime, client = FakeRuntime(), FakeClient()
    agent = make_agent(tmp_path, runtime, client)
    agent.start()
    try:
        agent.ensure_running(spec("j"))
        until(lambda: "h-j-1" in runtime.running)
        client.stale = [{"job_id": "j", "attempt": 1, "replica": 0}]
        until(lambda: client.exits)
        assert runtime.stopped == ["h-j-1"]
        assert client.exits[0]["reason"] == "stopped" and "stale" in client.exits[0]["message"]
    finally:
        agent.shutdown()


def test_cut_off_agent_fences_itself_then_reports_and_registers_again(tmp_path) -> None:
    runtime, client = FakeRuntime(), FakeClient()
    agent = make_agent(tmp_path, runtime, client)
    agent.start()
    try:
        agent.ensure_running(spec("j"))
        until(lambda: "h-j-1" in runtime.running)
        t0 = time.monotonic()
        client.down = True
        until(lambda: runtime.stopped == ["h-j-1"], 3.0)
        assert time.monotonic() - t0 < agent.lease_s, "stopped before the lease could run out"
        assert agent.fenced and runtime.removed == [], "the container stays until its exit is acknowledged"
        client.down = False
        until(lambda: client.exits and not agent.fenced)
        assert client.exits == [{"job_id": "j", "attempt": 1, "exit_code": 143, "reason": "lost",
                                 "message": LOST_CONTACT, "stop_cause": "fence"}]
        assert client.registrations == 2
        until(lambda: runtime.removed == ["h-j-1"])
    finally:
        agent.shutdown()


def test_mig_slices_are_carved_before_launch(tmp_path, monkeypatch) -> None:
    """On an NVML node the agent creates the chosen MIG instance and the job gets its MIG UUID."""
    from dataclasses import replace as dc_replace

    from tests.support.fake_nvml import FakeNvml
    from workers.gpu import nvml as nvml_module
    from workers.gpu.nvml import probe

    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: [(9, 0)]})
    monkeypatch.setattr(nvml_module, "load_nvml", lambda nvml=None: nvml or fake)
    runtime = FakeRuntime()
    agent = make_agent(tmp_path, runtime, FakeClient())
    agent.inventory = dc_replace(agent.inventory, gpu_source="nvml", gpus=probe(fake).gpus)
    parent = fake.gpus[0].uuid
    launched = agent.mig.carve(dc_replace(spec("m", 1), gpu_uuids=[parent],
                                           mig_slices=[{"index": 0, "gpu_uuid": parent, "profile": "3g.40gb",
                                                        "start": 4}]))
    created = [d for d in probe(fake).gpus[0].mig_devices if d.start == 4]
    assert len(created) == 1 and launched.gpu_uuids == [created[0].uuid] and created[0].uuid.startswith("MIG-")
    until(lambda: any(m.start == 4 for g in agent.inventory.gpus for m in g.mig_devices))  # re-reported

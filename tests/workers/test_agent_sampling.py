"""Sampling: the agent's ``sample_interval_s`` reaches its sampler, from ``GPUQ_SAMPLE_INTERVAL_S`` too."""

from __future__ import annotations

import socket
import time
import types
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

import workers.agent
import workers.sampler
from queue_service.embedded import EmbeddedServer
from queue_service.settings import Settings
from tests.workers.test_agent_recovery import FakeClient, FakeRuntime, make_agent, spec, until
from workers.agent import Agent
from workers.gpu.nvml import ProcessSample
from workers.messages import NodeInventory, SampleBody, SamplesAnswer


class SamplingClient(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, list[SampleBody]]] = []

    def samples(self, node_name: str, samples: list[SampleBody]) -> SamplesAnswer:
        self.sent.append((time.monotonic(), samples))
        return SamplesAnswer(stored=len(samples))


def test_samples_go_out_every_sample_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nvml_says(nvml: Any, uuids: list[str], *, since_us: int = 0) -> list[ProcessSample]:
        return [ProcessSample(gpu_uuid=u, pid=1, sm_percent=55.0, memory_used_mib=64, timestamp_us=0) for u in uuids]

    monkeypatch.setattr(workers.sampler, "sample_utilization", nvml_says)
    runtime, client = FakeRuntime(), SamplingClient()
    inventory = NodeInventory(node_name="n1", hostname="n1", boot_id="b", cpus=2, memory_mib=1024)
    agent = Agent(client=client, runtimes={"docker": runtime}, inventory=inventory, work_dir=tmp_path,
                  sample_interval_s=0.2)
    agent.start()
    try:
        agent.ensure_running(replace(spec("j"), gpu_uuids=["GPU-a"]))
        until(lambda: len(client.sent) >= 3, 5.0)  # the default interval (30 s) would send nothing yet
        [(first, [sample]), (second, _), (third, _)] = client.sent[:3]
        assert (sample.job_id, sample.gpu_uuid, sample.sm_percent, sample.memory_used_mib) == ("j", "GPU-a", 55.0, 64)
        assert 0.1 < sample.window_s < 1.0
        assert 0.1 < second - first < 1.0 and 0.1 < third - second < 1.0
    finally:
        agent.shutdown()


def test_the_default_interval_is_thirty_seconds(tmp_path: Path) -> None:
    assert make_agent(tmp_path, FakeRuntime(), FakeClient()).sampler.interval_s == 30.0


def test_gpuq_agent_takes_the_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import queue_service.embedded
    from queue_service.cli import app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(queue_service.embedded, "run_agent", lambda **kw: seen.update(kw))
    result = CliRunner().invoke(app, ["agent", "--server", "http://x", "--token", "t", "--broker-url", "redis://x"],
                                env={"GPUQ_SAMPLE_INTERVAL_S": "7.5"})
    assert result.exit_code == 0, result.output
    assert seen["sample_interval_s"] == 7.5


class RecordingAgent:
    """Stands in for ``workers.agent.Agent`` in the embedded server: records how it was built."""

    built: ClassVar[list[dict[str, Any]]] = []
    agents: ClassVar[list[RecordingAgent]] = []

    def __init__(self, **kw: Any) -> None:
        self.built.append(kw)
        self.inventory = kw["inventory"]
        self.node_name = self.inventory.node_name
        self.lease = types.SimpleNamespace(self_fence=True)  # what the embedded server sets on a real agent's lease
        RecordingAgent.agents.append(self)

    def start(self) -> None:
        pass

    def shutdown(self, **kw: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gpuq_serve_gives_its_local_agent_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.agent, "Agent", RecordingAgent)
    RecordingAgent.built.clear()
    RecordingAgent.agents.clear()
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", port=_free_port(), broker_url="memory://",
                        runtime="process", sample_interval_s=12.0)
    server = EmbeddedServer(settings).start()
    try:
        [built] = RecordingAgent.built
        assert built["sample_interval_s"] == 12.0 and built["heartbeat_s"] == settings.heartbeat_interval_s
        # the agent inside the server never fences itself off from the server it lives in
        assert RecordingAgent.agents[0].lease.self_fence is False
    finally:
        server.stop()

"""Measured use fed back: what the fake NVML was told to report reaches the job's and the project's efficiency
figures through the real sampler and the agent route; the right-size hint rule; the idle flag and its events."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from queue_service import cli
from queue_service.billing.efficiency import Device, observe, percentile_share, right_size
from queue_service.db.utilization_models import SHARE_BINS
from tests import builders
from tests.api.helpers import auth, get_job
from tests.billing.helpers import running
from tests.support.fake_nvml import FakeNvml
from workers.messages import SampleBody, SamplesAnswer
from workers.sampler import Holder, Sampler


def _bins(**seconds_at_percent: float) -> list[float]:
    bins = [0.0] * SHARE_BINS
    for pct, seconds in seconds_at_percent.items():
        bins[int(pct.lstrip("p"))] += seconds
    return bins


# -- the right-size rule (pure) ---------------------------------------------------------------------------------------
def test_an_over_asking_job_gets_a_hint_and_a_well_sized_one_none() -> None:
    # 50 blocks, busy 24 % of them (12 blocks) for 90 % of the run, bursts to 100 % for the rest: ask 15.
    over = right_size(asked=50, unit="block", share_seconds=_bins(p24=900, p100=100), sampled_s=1000)
    assert over is not None and over.suggest == 15 and over.suggest_unit == "block"
    assert over.text == "asked 50 blocks, used at most 12 for 90 % of its run: ask 15"
    assert right_size(asked=50, unit="block", share_seconds=_bins(p90=1000), sampled_s=1000) is None
    # 4 GPUs used at 20 % (0.8 GPUs): ask 1; one GPU used at 30 %: ask 38 blocks (a shared GPU).
    four = right_size(asked=4, unit="GPU", share_seconds=_bins(p20=1000), sampled_s=1000)
    assert four is not None and four.suggest == 1 and "asked 4 GPUs" in four.text
    one = right_size(asked=1, unit="GPU", share_seconds=_bins(p30=1000), sampled_s=1000)
    assert one is not None and (one.suggest, one.suggest_unit) == (38, "block")
    assert right_size(asked=1, unit="GPU", share_seconds=_bins(p70=1000), sampled_s=1000) is None


def test_no_hint_without_enough_evidence_or_for_mig() -> None:
    assert right_size(asked=50, unit="block", share_seconds=_bins(p5=300), sampled_s=300) is None
    assert right_size(asked=1, unit="MIG instance", share_seconds=_bins(p5=900), sampled_s=900) is None
    assert percentile_share([0.0] * SHARE_BINS) is None
    assert percentile_share(_bins(p10=50, p80=50), 0.5) == 0.10 and percentile_share(_bins(p10=50, p80=50)) == 0.80


def test_an_observation_is_measured_against_what_each_device_holds() -> None:
    blocks = observe([Device(equivalents=0.5, allocated_memory_mib=8192, sm_percent=12, memory_used_mib=3000)])
    assert blocks.share == pytest.approx(0.24) and blocks.busy_equiv == pytest.approx(0.12)
    two = observe([Device(1.0, 80_000, 100, 10), Device(1.0, 80_000, 0, 20)])
    assert two.share == pytest.approx(0.5) and (two.memory_used_mib, two.allocated_memory_mib) == (30, 160_000)
    mig = observe([Device(3 / 7, 40_000, None, 5000)])
    assert not mig.has_sm and mig.has_memory


# -- end to end: fake NVML -> sampler -> /v1/agent/samples -> summaries -> the API -----------------------------------
class _ApiSamples:
    """The agent client's ``samples`` seam, posting to the test app as node n1's agent."""

    def __init__(self, api: TestClient, token: str) -> None:
        self.api, self.token = api, token

    def samples(self, node_name: str, samples: list[SampleBody]) -> SamplesAnswer:
        body = {"node_name": node_name, "samples": [s.model_dump() for s in samples]}
        response = self.api.post("/v1/agent/samples", json=body, headers=auth(self.token))
        assert response.status_code == 200, response.text
        return SamplesAnswer.model_validate(response.json())


def _gpuq(api: TestClient, token: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    def init(self, server, tok) -> None:
        self.base, self.token, self.http = "http://testserver", token, api
    monkeypatch.setattr(cli.Api, "__init__", init)
    api.headers["Authorization"] = f"Bearer {token}"
    try:
        result = CliRunner().invoke(cli.app, list(args))
    finally:
        del api.headers["Authorization"]
    assert result.exit_code == 0, result.output
    return result.output


# PostgreSQL here (row locks, ON CONFLICT); the idle and share tests send samples through SQLite.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_efficiency_from_the_fake_nvml_per_job_and_per_project(api, ctx, actors, monkeypatch) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    alpha = running(api, ctx, actors, actors.member_a, project="alpha")  # one whole GPU, kept 90 % busy
    beta = running(api, ctx, actors, actors.member_b, project="beta",
                   resources={"blocks": 50, "gpu_memory_mib": 8192})  # half a GPU, 12 % of the GPU busy
    gpu_a, gpu_b = alpha["allocation"][0]["gpu_uuid"], beta["allocation"][0]["gpu_uuid"]
    fake = FakeNvml.from_spec("h100-80gb:2")
    fake.gpus[0].uuid, fake.gpus[1].uuid = gpu_a, gpu_b
    fake.add_process(gpu_a, 101, used_mib=2000, sm_percent=90)
    fake.add_process(gpu_b, 202, used_mib=3000, sm_percent=12)
    holders = {gpu_a: [Holder(alpha["id"], 1, 0, "101")], gpu_b: [Holder(beta["id"], 1, 0, "202")]}
    sampler = Sampler(node_name="n1", holders=lambda: holders, client=_ApiSamples(api, actors.agent), nvml=fake)
    for _ in range(3):
        assert sampler.once(window_s=300.0) == 2

    a = api.get(f"/v1/jobs/{alpha['id']}/efficiency", headers=auth(actors.member_a)).json()
    assert (a["busy_share"], a["sampled_s"], a["peak_memory_mib"], a["mean_memory_mib"]) == (0.9, 900.0, 2000, 2000)
    assert a["allocated_memory_mib"] > 70_000 and a["hint"] is None and a["idle"] is False  # well sized
    b = api.get(f"/v1/jobs/{beta['id']}/efficiency", headers=auth(actors.member_b)).json()
    assert (b["busy_share"], b["p90_busy_share"], b["allocated_memory_mib"], b["peak_memory_mib"]) == (
        0.24, 0.24, 8192, 3000)
    assert b["hint"] == "asked 50 blocks, used at most 12 for 90 % of its run: ask 15" and b["suggest"] == 15
    assert api.get(f"/v1/jobs/{beta['id']}/efficiency", headers=auth(actors.member_a)).status_code == 404

    report = api.get("/v1/usage/efficiency", params={"group_by": "project"}, headers=auth(actors.viewer)).json()
    rows = {r["key"]: r for r in report["rows"]}
    assert (rows["alpha"]["measured_gpu_s"], rows["alpha"]["used_gpu_s"], rows["alpha"]["busy_share"]) == (
        900.0, 810.0, 0.9)
    assert (rows["beta"]["measured_gpu_s"], rows["beta"]["used_gpu_s"], rows["beta"]["busy_share"]) == (
        450.0, 108.0, 0.24)
    assert report["total"]["busy_share"] == pytest.approx(918 / 1350, abs=1e-4) and report["total"]["jobs"] == 2
    mine = api.get("/v1/usage/efficiency", headers=auth(actors.member_a)).json()
    assert [r["key"] for r in mine["rows"]] == ["alpha"] and mine["total"]["used_gpu_s"] == 810.0
    bad = api.get("/v1/usage/efficiency", params={"group_by": "gpu"}, headers=auth(actors.viewer))
    assert bad.status_code == 422 and "group_by" in bad.text

    shown = _gpuq(api, actors.member_b, monkeypatch, "show", beta["id"])
    assert "efficiency: busy 24% of what it held" in shown and "peak 3000 MiB, mean 3000 MiB of 8192 MiB" in shown
    assert "right-size: asked 50 blocks, used at most 12 for 90 % of its run: ask 15" in shown
    table = _gpuq(api, actors.viewer, monkeypatch, "efficiency").splitlines()
    assert any(line.split()[:1] == ["beta"] and "24%" in line for line in table) and "total" in table[-1]


def _post(api, actors, job, *, sm: float, window_s: float) -> dict:
    body = {"node_name": "n1", "samples": [{
        "job_id": job["id"], "attempt": job["attempt"], "replica": 0, "gpu_uuid": job["allocation"][0]["gpu_uuid"],
        "window_s": window_s, "sm_percent": sm, "memory_used_mib": 100}]}
    response = api.post("/v1/agent/samples", json=body, headers=auth(actors.agent))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_idle_flag_is_stored_shown_and_sent_as_events(api, ctx, actors) -> None:
    ctx.settings.idle_after_s = 60.0
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    _post(api, actors, job, sm=1, window_s=30)  # not enough evidence yet
    assert get_job(api, actors.member_a, job["id"])["idle"] is False
    assert _post(api, actors, job, sm=2, window_s=61)["idle"][0]["job_id"] == job["id"]
    shown = get_job(api, actors.member_a, job["id"])
    assert shown["idle"] is True and shown["idle_since"] is not None and shown["state"] == "running"
    _post(api, actors, job, sm=0, window_s=61)  # still idle: no second event
    assert api.get(f"/v1/jobs/{job['id']}/efficiency", headers=auth(actors.member_a)).json()["idle"] is True
    _post(api, actors, job, sm=80, window_s=61)
    assert get_job(api, actors.member_a, job["id"])["idle"] is False
    history = api.get(f"/v1/jobs/{job['id']}/events", headers=auth(actors.member_a)).json()["data"]
    flags = [(e["event"], e["from_state"], e["to_state"], e["actor"]) for e in history
             if e["event"] in ("idle", "active")]
    assert flags == [("idle", "running", "running", "service"), ("active", "running", "running", "service")]
    assert "SM below 5%" in next(e["reason"] for e in history if e["event"] == "idle")

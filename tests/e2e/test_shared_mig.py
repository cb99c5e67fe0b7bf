"""Block jobs on a MIG-enabled H100 (fake NVML), through the in-process service and the agent's MIG carver.

A 20-block job gets a new shared MIG instance (carved by the agent at launch, re-registered with its
UUID and still shared), a second 20-block job stacks on it, a 3g.40gb job takes another slot, and
/v1/nodes shows each instance as it is. A block job whose memory no shared instance of this
MIG-mode GPU can hold is refused at submit, naming the field. The dashboard's drawing code (index.html
with app.js and mig.js, in headless Chromium) draws that /v1/nodes GPU with the 40 held blocks inside the
shared slot (skipped without Chromium and Playwright, like tests/ui).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from queue_service.admitter.launch import launch_spec
from queue_service.cli.nodes import _gpu_lines
from queue_service.db.models import Allocation, Job
from tests.api.helpers import auth, get_job, gpus_of, started
from tests.support.builders import job_body
from tests.support.fake_nvml import FakeNvml
from workers.agent.mig import MigCarver
from workers.gpu import nvml as nvml_module
from workers.gpu.nvml import probe
from workers.messages import LaunchSpec, NodeInventory

INDEX = Path(__file__).resolve().parents[2] / "queue_service" / "ui" / "static" / "index.html"
CHROMIUM = "/usr/bin/chromium"


def _register(api, token: str, fake: FakeNvml) -> NodeInventory:
    inventory = NodeInventory(node_name="n1", hostname="n1", boot_id="boot-n1", cpus=32, memory_mib=256 * 1024,
                              gpus=list(probe(fake).gpus), gpu_source="nvml")
    response = api.post("/v1/agent/register", json={"inventory": inventory.to_dict()}, headers=auth(token))
    assert response.status_code == 200, response.text
    return inventory


def _admit(api, ctx, actors, resources: dict) -> tuple[dict, LaunchSpec]:
    response = api.post("/v1/jobs", json=job_body(resources=resources), headers=auth(actors.admin))
    assert response.status_code == 201, response.text
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, response.json()["id"])
    assert job["state"] == "admitted", job
    with ctx.sessions() as session:  # the launch the admitter sent, rebuilt from the rows it wrote
        row = session.get(Job, job["id"])
        rows = session.scalars(select(Allocation).where(Allocation.job_id == job["id"])).all()
        spec = launch_spec(row, job["attempt"], 0, "n1", rows, classes={}, settings=ctx.settings)
    return job, spec


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing here differs on PostgreSQL
def test_block_jobs_share_a_carved_mig_instance_beside_a_3g(api, ctx, actors, monkeypatch) -> None:
    fake = FakeNvml.from_spec("h100-80gb:1", mig={0: []})  # MIG on, nothing carved
    monkeypatch.setattr(nvml_module, "load_nvml", lambda nvml=None: nvml or fake)
    inventory = _register(api, actors.agent, fake)
    reported: list = []
    carver = MigCarver(inventory=lambda: inventory, report_gpus=reported.append)

    first, spec = _admit(api, ctx, actors, {"blocks": 20, "gpu_memory_mib": 4096})
    parent = inventory.gpus[0].uuid
    assert spec.mig_shared and spec.blocks == 20 and spec.gpu_uuids == [parent]
    assert spec.mig_slices == [{"index": 0, "gpu_uuid": parent, "profile": "1g.10gb", "start": 0, "shared": True}]
    carved = carver.carve(spec)  # the agent carves the instance just before the job starts
    [device] = probe(fake).gpus[0].mig_devices
    assert carved.gpu_uuids == [device.uuid] and (device.profile, device.start) == ("1g.10gb", 0)
    inventory = _register(api, actors.agent, fake)  # the agent's re-probe after carving
    assert started(api, actors.agent, first).status_code == 200
    [gpu] = gpus_of(api, actors.admin, "n1")
    assert gpu["mig_layout"][0]["shared"] is True and gpu["mig_layout"][0]["uuid"] == device.uuid

    second, spec2 = _admit(api, ctx, actors, {"blocks": 20, "gpu_memory_mib": 4096})
    assert spec2.gpu_uuids == [device.uuid] and spec2.mig_slices == [] and spec2.mig_shared  # stacked, carved
    assert started(api, actors.agent, second).status_code == 200

    whole, spec3 = _admit(api, ctx, actors, {"mig": "3g.40gb"})
    assert [(s["profile"], s["start"]) for s in spec3.mig_slices] == [("3g.40gb", 4)] and not spec3.mig_shared
    carver = MigCarver(inventory=lambda: inventory, report_gpus=reported.append)
    carver.carve(replace(spec3))
    _register(api, actors.agent, fake)
    assert started(api, actors.agent, whole).status_code == 200

    [gpu] = gpus_of(api, actors.admin, "n1")
    instances = {i["start"]: i for i in gpu["mig_instances"]}
    assert sorted(instances) == [0, 4]
    shared, held = instances[0], instances[4]
    assert (shared["mode"], shared["profile"], shared["used_blocks"], shared["used_memory_mib"], shared["sm_count"]) \
        == ("shared", "1g.10gb", 40, 8192, 16)
    assert (held["mode"], held["held"], held["profile"]) == ("exclusive", True, "3g.40gb")
    assert sorted(h["blocks"] for h in gpu["holders"] if h["kind"] == "blocks") == [20, 20]
    [(free, who)] = _gpu_lines(gpu)  # gpuq nodes
    assert "1g.10gb@0 shared 40/100 blocks of 16 SMs: default/t" in who and "3g.40gb@4 held by default/t" in who, who
    assert free.startswith("0/2 instances free"), free

    # 7g.80gb (81152 MiB) is the most a shared instance of this GPU can hold, below the GPU's 81559 MiB
    refused = api.post("/v1/jobs", json=job_body(resources={"blocks": 10, "gpu_memory_mib": 81400}),
                       headers=auth(actors.admin))
    assert refused.status_code == 422 and refused.json()["field"] == "resources.gpu_memory_mib", refused.text
    assert "81152" in refused.json()["detail"]
    _dashboard_draws(gpu)


def _dashboard_draws(gpu: dict) -> None:
    """The dashboard's own scripts draw the /v1/nodes GPU: 100 blocks in the shared slot, 40 held by the two jobs."""
    from tests.services import missing

    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        missing("Playwright", "pip package playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        missing("Chromium", "Debian's chromium is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(INDEX.as_uri())  # the real page and scripts; no server: the API calls fail, drawGpu does not
            drawn = page.evaluate("""(gpu) => {
                const box = drawGpu(gpu, {});
                document.body.append(box);
                const shared = box.querySelector(".slice.shared");
                return {blocks: shared.querySelectorAll(".block").length,
                        held: [...shared.querySelectorAll(".block.held")].map(b => b.dataset.project),
                        start: shared.dataset.start, title: shared.title,
                        whole: [...box.querySelectorAll(".slice:not(.shared)")].map(s => s.dataset.profile)};
            }""", gpu)
        finally:
            browser.close()
    assert drawn["blocks"] == 100 and drawn["held"] == ["default"] * 40 and drawn["start"] == "0", drawn
    assert "40/100 blocks" in drawn["title"] and "16 SMs" in drawn["title"], drawn
    assert drawn["whole"] == ["3g.40gb"], drawn

"""``gpuq nodes`` and /v1/nodes: MIG instances as they are, shares by holder, cordoned and draining nodes as such."""

from __future__ import annotations

from typer.testing import CliRunner

from queue_service import cli
from tests import builders
from tests.api.helpers import auth, get_job, started


def _agent(actors, node_name: str) -> str:
    """An agent token for ``node_name`` (bound per node where tokens are; the one agent token where not)."""
    agent_for = getattr(actors, "agent_for", None)
    return agent_for(node_name) if agent_for else actors.agent


def _gpuq(api, monkeypatch, token: str, *args: str) -> str:
    def init(self, server, tok) -> None:
        self.base, self.token, self.http = "http://testserver", token, api
        api.headers["Authorization"] = f"Bearer {token}"
    monkeypatch.setattr(cli.Api, "__init__", init)
    out = CliRunner().invoke(cli.app, list(args))
    api.headers.pop("Authorization", None)
    assert out.exit_code == 0, out.output
    return str(out.output)


def _run(api, ctx, actors, project: str, resources: dict) -> dict:
    body = builders.job_body(name=f"{project}-job", project=project, resources=resources)
    job = api.post("/v1/jobs", json=body, headers=auth(actors.admin)).json()
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert job["state"] == "admitted", job
    assert started(api, _agent(actors, "n1"), job).status_code == 200
    return job


def _gpus(api, token: str) -> dict[str, dict]:
    [node] = [n for n in api.get("/v1/nodes", headers=auth(token)).json() if n["name"] == "n1"]
    return {g["mode"]: g for g in node["gpus"]}


def test_mig_instances_and_shares_as_they_are(api, ctx, actors, monkeypatch) -> None:
    builders.register(api, _agent(actors, "n1"), "n1", "h100-80gb:2")
    mine = _run(api, ctx, actors, "alpha", {"blocks": 30, "gpu_memory_mib": 8192})
    _run(api, ctx, actors, "beta", {"blocks": 50, "gpu_memory_mib": 8192})
    _run(api, ctx, actors, "beta", {"mig": "3g.40gb"})
    _run(api, ctx, actors, "beta", {"mig": "3g.40gb"})
    gpus = _gpus(api, actors.member_a)
    mig, shared = gpus["mig"], gpus["shared"]
    # Two busy 3g.40gb instances: the MIG GPU is not "100/100 blocks, all memory free".
    held = [i for i in mig["mig_instances"] if i["held"]]
    assert [i["profile"] for i in held] == ["3g.40gb", "3g.40gb"]
    assert mig["free_blocks"] < 100 and mig["free_memory_mib"] < mig["memory_mib"] - 2 * 40000
    # A member sees its own holding by name and the other project's as occupied, never as free.
    holders = sorted(shared["holders"], key=lambda h: h["blocks"])
    assert [(h["project"], h["job_id"], h["blocks"]) for h in holders] == [
        ("alpha", mine["id"], 30), (None, None, 50)]
    assert shared["free_blocks"] == 20
    text = _gpuq(api, monkeypatch, actors.member_a, "nodes")
    assert "2/2 instances free" not in text and "0/2 instances free" in text, text
    assert "3g.40gb@0 held by other project" in text, text
    assert f"alpha/alpha-job ({mine['id'][:8]}) 30 blocks" in text and "other project 50 blocks" in text, text
    admin_text = _gpuq(api, monkeypatch, actors.admin, "nodes")
    assert "beta/beta-job" in admin_text and "other project" not in admin_text, admin_text


def test_cordoned_and_draining_nodes_say_so(api, actors, monkeypatch) -> None:
    builders.register(api, _agent(actors, "n1"), "n1", "h100-80gb:1")
    builders.register(api, _agent(actors, "n2"), "n2", "h100-80gb:1")
    builders.register(api, _agent(actors, "n3"), "n3", "h100-80gb:1")
    assert api.post("/v1/nodes/n1/cordon", json={"reason": "bios"}, headers=auth(actors.admin)).status_code == 200
    assert api.post("/v1/nodes/n2/drain", json={"reason": "rma"}, headers=auth(actors.admin)).status_code == 200
    nodes = {n["name"]: n for n in api.get("/v1/nodes", headers=auth(actors.viewer)).json()}
    assert (nodes["n1"]["schedulable"], nodes["n1"]["no_work_reason"]) == (False, "cordoned")
    assert (nodes["n2"]["schedulable"], nodes["n2"]["no_work_reason"]) == (False, "draining")
    assert (nodes["n3"]["schedulable"], nodes["n3"]["no_work_reason"]) == (True, "")
    text = _gpuq(api, monkeypatch, actors.viewer, "nodes")
    status = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.startswith("n")}
    assert status == {"n1": "cordoned", "n2": "draining", "n3": "ready"}, text
    assert "takes no new work (cordoned)" in text and "takes no new work (draining)" in text

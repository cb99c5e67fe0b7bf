"""Agents speak only for their node: bound tokens, live attempts only, inventories checked, GPU growth held."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from typer.testing import CliRunner

from queue_service import cli
from queue_service.auth import hash_token, new_token
from queue_service.db.models import ApiToken, AuditEntry
from tests import builders
from tests.api.helpers import attempt_ref, auth, exited, get_job, gpus_of, log_chunk, started, submit
from workers.messages import GpuInfo, MigDeviceInfo


def _running(api, ctx, actors, node: str = "n1", **overrides) -> dict:
    job = submit(api, actors.admin, **overrides)
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert job["state"] == "admitted" and job["allocation"][0]["node"] == node, job
    assert started(api, actors.agent_for(node), job).status_code == 200
    return get_job(api, actors.admin, job["id"])


def _calls(job: dict, node_name: str) -> list[tuple[str, dict]]:
    ref = attempt_ref(job) | {"node_name": node_name}
    return [
        ("/v1/agent/register", {"inventory": builders.inventory(node_name, "h100-80gb:1").to_dict()}),
        ("/v1/agent/heartbeat", {"node_name": node_name}),
        ("/v1/agent/adopt", {"node_name": node_name, "attempts": []}),
        ("/v1/agent/started", ref),
        ("/v1/agent/exited", ref | {"exit_code": 0, "reason": "exited"}),
        ("/v1/agent/logs", ref | {"stream": "stdout", "offset": 0, "data_b64": "aGk="}),
        ("/v1/agent/samples", {"node_name": node_name, "samples": []}),
    ]


def test_an_agent_token_needs_a_node(api, actors, monkeypatch) -> None:
    response = api.post("/v1/tokens", json={"role": "agent", "name": "a"}, headers=auth(actors.admin))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "node_name" and "node_name" in response.json()["detail"]

    def init(self, server, tok) -> None:
        self.base, self.token, self.http = "http://testserver", actors.admin, api
        api.headers["Authorization"] = f"Bearer {actors.admin}"
    monkeypatch.setattr(cli.Api, "__init__", init)
    out = CliRunner().invoke(cli.app, ["admin", "token", "create", "--role", "agent"])
    assert out.exit_code != 0 and "node_name" in out.output, out.output
    out = CliRunner().invoke(cli.app, ["admin", "token", "create", "--role", "agent", "--node-name", "n9"])
    assert out.exit_code == 0 and out.output.strip().startswith("gpuq_"), out.output


def test_an_unbound_agent_token_speaks_for_no_node(api, ctx, actors) -> None:
    """A token made before binding was required (no node name in its row) is refused everywhere."""
    plain = new_token()
    with ctx.sessions() as session, session.begin():
        session.add(ApiToken(name="old-agent", role="agent", token_hash=hash_token(plain), projects=[]))
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = _running(api, ctx, actors, env={"SECRET": "s3cret"})
    for path, body in _calls(job, "n1"):
        response = api.post(path, json=body, headers=auth(plain))
        assert response.status_code == 403, (path, response.text)
        assert "bound to no node" in response.json()["detail"]
    after = get_job(api, actors.admin, job["id"])
    assert after["state"] == "running" and after["attempt"] == 1


def test_another_nodes_agent_cannot_adopt_report_or_log(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    n2 = actors.agent_for("n2")
    builders.register(api, n2, "n2")  # no GPUs: the job runs on n1
    job = _running(api, ctx, actors, env={"SECRET": "s3cret"})
    ref = attempt_ref(job)

    # Naming n1: refused by the binding.
    for path, body in _calls(job, "n1"):
        response = api.post(path, json=body, headers=auth(n2))
        assert response.status_code == 403, (path, response.text)
        assert "bound to node 'n2'" in response.json()["detail"]
    # Naming its own node: the attempt is not there.
    adopt = api.post("/v1/agent/adopt", json={"node_name": "n2", "attempts": [ref | {"node_name": "n2"}]},
                     headers=auth(n2))
    assert adopt.status_code == 200, adopt.text
    assert adopt.json()["keep"] == [] and [s["job_id"] for s in adopt.json()["stop"]] == [job["id"]]
    assert "s3cret" not in adopt.text
    mine = ref | {"node_name": "n2"}
    for path, body in (
        ("/v1/agent/started", mine),
        ("/v1/agent/exited", mine | {"exit_code": 1, "reason": "exited"}),
        ("/v1/agent/logs", mine | {"stream": "stdout", "offset": 0, "data_b64": "aGk="}),
    ):
        response = api.post(path, json=body, headers=auth(n2))
        assert response.status_code == 409, (path, response.text)
    gpu = gpus_of(api, actors.admin, "n1")[0]["uuid"]
    sample = {"job_id": job["id"], "attempt": 1, "replica": 0, "gpu_uuid": gpu, "window_s": 30.0,
              "sm_percent": 0.0, "memory_used_mib": 1}
    response = api.post("/v1/agent/samples", json={"node_name": "n2", "samples": [sample]}, headers=auth(n2))
    assert response.status_code == 409, response.text
    after = get_job(api, actors.admin, job["id"])
    assert after["state"] == "running" and after["attempt"] == 1
    assert api.get(f"/v1/jobs/{job['id']}/logs", headers=auth(actors.admin)).json()["stdout"] == ""

    # Its own agent may; once the job is over, nothing more is taken for that attempt.
    assert api.post("/v1/agent/samples", json={"node_name": "n1", "samples": [sample]},
                    headers=auth(actors.agent)).json()["stored"] == 1
    assert exited(api, actors.agent, job, exit_code=0).json()["state"] == "succeeded"
    assert log_chunk(api, actors.agent, job, stream="stdout", offset=0, data=b"late").status_code == 409
    assert started(api, actors.agent, job).status_code == 409
    assert api.post("/v1/agent/samples", json={"node_name": "n1", "samples": [sample]},
                    headers=auth(actors.agent)).json()["stored"] == 0
    adopt = api.post("/v1/agent/adopt", json={"node_name": "n1", "attempts": [ref]}, headers=auth(actors.agent))
    assert adopt.json()["keep"] == [] and len(adopt.json()["stop"]) == 1
    assert api.get(f"/v1/jobs/{job['id']}/logs", headers=auth(actors.admin)).json()["stdout"] == ""


def _register(api, token: str, inventory) -> object:
    return api.post("/v1/agent/register", json={"inventory": inventory.to_dict()}, headers=auth(token))


def test_inventories_no_node_reports_are_refused(api, actors) -> None:
    base = builders.inventory("n1", "h100-80gb:2")
    g0 = base.gpus[0]
    mig = MigDeviceInfo(uuid="MIG-x", profile="9g.999gb", profile_id=0, start=0, size=1, memory_mib=10, sm_count=1)
    for case, inventory, field in (
        ("negative GPU memory", replace(base, gpus=[replace(g0, memory_mib=-1)]), "inventory.gpus[0]"),
        ("no SMs", replace(base, gpus=[replace(g0, sm_count=0)]), "inventory.gpus[0]"),
        ("no CPUs", replace(base, cpus=0), "inventory.cpus"),
        ("negative memory", replace(base, memory_mib=-5), "inventory.memory_mib"),
        ("17 GPUs", builders.inventory("n1", "h100-80gb:17"), "inventory.gpus"),
        ("one UUID twice", replace(base, gpus=[g0, replace(g0, index=1)]), "inventory.gpus"),
        ("one index twice", replace(base, gpus=[g0, replace(base.gpus[1], index=0)]), "inventory.gpus"),
        ("an H100 with 1 TiB", replace(base, gpus=[replace(g0, memory_mib=1 << 20)]), "inventory.gpus[0]"),
        ("a MIG profile the model lacks", replace(base, gpus=[replace(g0, mig_enabled=True, mig_devices=[mig])]),
         "inventory.gpus[0]"),
    ):
        response = _register(api, actors.agent, inventory)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["field"] == field, (case, response.json())
    assert api.get("/v1/nodes", headers=auth(actors.admin)).json() == []
    # An unknown model still registers (it schedules as whole GPUs or blocks).
    odd = GpuInfo(uuid="GPU-odd", index=0, name="Acme X1", model="Acme X1", memory_mib=24_000, sm_count=40)
    assert _register(api, actors.agent, replace(base, gpus=[odd])).status_code == 200


def test_a_nodes_gpus_grow_only_when_an_admin_accepts(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    assert len(gpus_of(api, actors.admin, "n1")) == 2
    # The same host now says it has 16 H100s: held, the node keeps its 2.
    assert _register(api, actors.agent, builders.inventory("n1", "h100-80gb:16")).status_code == 200
    [node] = api.get("/v1/nodes", headers=auth(actors.viewer)).json()
    assert len(node["gpus"]) == 2 and node["pending_gpus"] == "16 x h100-80gb" and node["pending_since"]
    refused = api.post("/v1/jobs", json=builders.job_body(resources={"gpus": 3}), headers=auth(actors.admin))
    assert refused.status_code == 422 and "largest node has 2" in refused.json()["detail"], refused.text

    for who in ("operator", "viewer", "member_a", "agent"):
        response = api.post("/v1/nodes/n1/accept", headers=auth(getattr(actors, who)))
        assert response.status_code == 403, (who, response.text)
    response = api.post("/v1/nodes/n1/accept", json={"reason": "new chassis"}, headers=auth(actors.admin))
    assert response.status_code == 200, response.text
    assert len(response.json()["gpus"]) == 16 and response.json()["pending_gpus"] == ""
    assert api.post("/v1/nodes/n1/accept", headers=auth(actors.admin)).status_code == 409
    assert api.post("/v1/nodes/ghost/accept", headers=auth(actors.admin)).status_code == 404
    big = submit(api, actors.admin, resources={"gpus": 3})
    ctx.admitter.run_once()
    assert get_job(api, actors.admin, big["id"])["state"] == "admitted"
    with ctx.sessions() as session:
        actions = [(a.action, a.actor) for a in session.scalars(select(AuditEntry).where(AuditEntry.target == "n1"))]
    assert ("node.gpus_held", "agent:n1") in actions and ("node.accept", "admin:admin") in actions


def test_other_models_are_held_and_fewer_gpus_are_taken_at_once(api, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    before = gpus_of(api, actors.admin, "n1")
    # The same GPUs now claim to be another model: held, and not offered meanwhile.
    other = builders.inventory("n1", "a100-80gb:2")
    assert [g.uuid for g in other.gpus] == [g["uuid"] for g in before]
    assert _register(api, actors.agent, other).status_code == 200
    [node] = api.get("/v1/nodes", headers=auth(actors.admin)).json()
    assert node["gpus"] == [] and node["pending_gpus"] == "2 x a100-80gb"
    # Back to what was accepted: nothing held any more.
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    [node] = api.get("/v1/nodes", headers=auth(actors.admin)).json()
    assert len(node["gpus"]) == 2 and node["pending_gpus"] == ""
    # One GPU gone: taken at once (the node only offers less).
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    [node] = api.get("/v1/nodes", headers=auth(actors.admin)).json()
    assert [g["uuid"] for g in node["gpus"]] == [before[0]["uuid"]] and node["pending_gpus"] == ""

"""The agent wire contract: the routes take its models as bodies, and the real client round-trips a real app.

If the service's answer and the agent's model drift apart, the client's
``model_validate`` fails here (``BadAnswer``), not silently in production.
"""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from queue_service.context import ServiceContext
from workers import protocol
from workers.client import BadAnswer, Refused, ServiceClient
from workers.inventory import parse_simulation
from workers.messages import (
    AdoptAnswer,
    ExitedAnswer,
    ExitReason,
    HeartbeatAnswer,
    LaunchSpec,
    LogsAnswer,
    NodeInventory,
    RegisterAnswer,
    SampleBody,
    SamplesAnswer,
    StartedAnswer,
)

CONTRACT_MODELS = {
    obj for obj in (getattr(protocol, name) for name in protocol.__all__)
    if isinstance(obj, type) and issubclass(obj, BaseModel)
}


AGENT_PATHS = {"/v1/agent/register", "/v1/agent/heartbeat", "/v1/agent/adopt", "/v1/agent/started",
               "/v1/agent/exited", "/v1/agent/logs", "/v1/agent/samples"}


def test_every_agent_route_body_is_a_contract_model(api: TestClient) -> None:
    from queue_service.api.routes import agent as agent_routes
    from queue_service.api.routes import samples as sample_routes

    routes = [r for r in (*agent_routes.router.routes, *sample_routes.router.routes) if isinstance(r, APIRoute)]
    assert {"/v1" + r.path for r in routes} >= AGENT_PATHS
    for route in routes:
        bodies = [p.field_info.annotation for p in route.dependant.body_params]
        assert len(bodies) == 1, (route.path, bodies)
        assert bodies[0] in CONTRACT_MODELS, f"{route.path} takes {bodies[0]!r}, not a model of workers/protocol.py"
    # And the app serves exactly those bodies (as its OpenAPI schema says).
    schema = api.app.openapi()
    names = {m.__name__ for m in CONTRACT_MODELS}
    for path in AGENT_PATHS:
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[-1] in names, (path, ref)


def test_contract_models_are_reexported_by_messages() -> None:
    """queue_service may import only workers.messages: every contract model must be reachable there."""
    import workers.messages as messages

    for model in CONTRACT_MODELS | {protocol.ExitReason}:
        assert getattr(messages, model.__name__) is model
    from workers.runtime.base import ExitReason as RuntimeExitReason

    assert RuntimeExitReason is protocol.ExitReason


def _inventory(node_name: str) -> NodeInventory:
    return NodeInventory(node_name=node_name, hostname=node_name, boot_id="b", cpus=8, memory_mib=65536,
                         gpus=parse_simulation("h100-80gb:1", node_name=node_name), gpu_source="simulated")


def test_the_client_round_trips_every_route(api: TestClient, ctx: ServiceContext, actors) -> None:
    client = ServiceClient("http://testserver", actors.agent, http=api, attempts=1)
    registered = client.register(_inventory("n1"))
    assert isinstance(registered, RegisterAnswer) and registered.lease_s == ctx.settings.node_lease_s

    beat = client.heartbeat("n1", running=[("f" * 20, 1, 0)])
    assert isinstance(beat, HeartbeatAnswer) and beat.known
    assert [k.key() for k in beat.stale] == [("f" * 20, 1, 0)], "an attempt the service does not place here"

    body = {"command": ["true"], "resources": {"gpus": 1}}
    job = api.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {actors.admin}"}).json()
    ctx.admitter.run_once()
    spec = LaunchSpec(job_id=job["id"], attempt=1, node_name="n1", command=["true"])

    assert client.claim(spec) == StartedAnswer(state="running")
    assert client.logs(spec, stream="stdout", offset=0, data=b"hello") == LogsAnswer(end=5)
    gpu = _inventory("n1").gpus[0].uuid
    stored = client.samples("n1", [SampleBody(job_id=job["id"], attempt=1, gpu_uuid=gpu, window_s=30.0,
                                              sm_percent=40.0, memory_used_mib=100)])
    assert isinstance(stored, SamplesAnswer) and stored.stored == 1

    adopted = client.adopt("n1", [(job["id"], 1, 0), ("e" * 20, 1, 0)])
    assert isinstance(adopted, AdoptAnswer)
    assert [k.key() for k in adopted.stop] == [("e" * 20, 1, 0)]
    [kept] = adopted.keep
    assert kept.key() == (job["id"], 1, 0) and LaunchSpec.from_dict(kept.spec).command == ["true"]

    assert client.exited(spec, exit_code=0, reason=ExitReason.EXITED) == ExitedAnswer(state="succeeded",
                                                                                     finalized=True)
    with pytest.raises(Refused) as refused:
        client.claim(spec)  # a finished attempt cannot be claimed again
    assert refused.value.status == 409


def test_a_body_the_route_would_refuse_is_refused_before_it_is_sent(api: TestClient, actors) -> None:
    sent: list[str] = []
    api.event_hooks["request"].append(lambda request: sent.append(str(request.url)))
    client = ServiceClient("http://testserver", actors.agent, http=api, attempts=1)
    with pytest.raises(Refused) as refused:
        client.claim(LaunchSpec(job_id="x" * 40, attempt=1, node_name="n1", command=["true"]))  # id > 32 chars
    assert refused.value.status == 422 and sent == []


def test_an_answer_that_does_not_fit_the_contract_is_no_answer() -> None:
    """A heartbeat answer without the lease must not extend it: ``BadAnswer`` is a ``ServiceUnavailable``."""
    from fastapi import FastAPI

    drifted = FastAPI()

    @drifted.post("/v1/agent/heartbeat")
    def heartbeat() -> dict:
        return {"known": True, "stale": []}  # lease_s and heartbeat_s missing

    with TestClient(drifted) as http:
        client = ServiceClient("http://testserver", "token", http=http, attempts=1)
        with pytest.raises(BadAnswer, match="HeartbeatAnswer"):
            client.heartbeat("n1")

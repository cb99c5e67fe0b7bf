"""No 5xx from input: every finding of the issue's hand fuzzing, answered 4xx on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import auth, submit
from tests.builders import job_body
from tests.conftest import Actors
from tests.support.builders import register
from workers.messages import reserved_env_name

BIG64 = 2**63
BIG32 = 2**31


def _shape(response) -> dict:
    """A 4xx answer has the documented shape: ``detail`` text and ``field`` (text or null)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["field"] is None or isinstance(body["field"], str)
    return body


NUL_PATHS = [
    "/v1/jobs/%00", "/v1/jobs/a%00b/events", "/v1/jobs?state=%00", "/v1/jobs?project=x%00",
    "/v1/jobs?cursor=%00", "/v1/audit?action=%00", "/v1/projects/%00/usage", "/v1/usage?project=%00",
]


def test_nul_bytes_in_the_path_or_query_are_refused(api: TestClient, actors: Actors) -> None:
    for path in NUL_PATHS:
        assert _shape(api.get(path, headers=auth(actors.admin)))["detail"].startswith("NUL bytes"), path


NUL_BODIES = [
    ("POST", "/v1/tokens", {"role": "viewer", "name": "v\u0000x"}),
    ("POST", "/v1/projects", {"name": "p\u0000"}),
    ("POST", "/v1/jobs", job_body(name="a\u0000b")),
    ("POST", "/v1/jobs", job_body(project="def\u0000ault")),
    ("POST", "/v1/jobs", job_body(env={"A": "x\u0000"})),  # field: env.A
    ("POST", "/v1/jobs", job_body(env={"A\u0000": "x"})),
    ("POST", "/v1/jobs/batch", {"jobs": [job_body(priority_class="n\u0000")]}),
    ("PUT", "/v1/priority-classes/urgent", {"value": 1, "reason": "\u0000"}),
    ("POST", "/v1/prices", {"gpu_model": "h100\u0000", "gpu_hour": 1}),
    ("POST", "/v1/agent/exited", {"node_name": "n1", "job_id": "j", "attempt": 1, "reason": "exited",
                                  "message": "\u0000"}),
]


def test_nul_bytes_in_json_bodies_are_refused(api: TestClient, actors: Actors) -> None:
    for method, path, body in NUL_BODIES:
        response = api.request(method, path, json=body, headers=auth(actors.admin))
        assert response.status_code == 422, (path, response.text)
        assert "NUL bytes" in _shape(response)["detail"]


def test_a_command_argument_with_a_nul_is_refused_not_run(api: TestClient, actors: Actors) -> None:
    """Once a 201 that then burnt four attempts as "infrastructure loss"; now refused at the door."""
    body = json.dumps(job_body(command=["echo", "a\u0000b"]))
    response = api.post("/v1/jobs", content=body, headers=auth(actors.admin) | {"content-type": "application/json"})
    assert response.status_code == 422
    # and through the schema itself (a caller that bypasses the JSON guard, e.g. a form-less client):
    from queue_service.api.schemas.jobs import JobCreate

    with pytest.raises(ValueError, match="NUL"):
        JobCreate.model_validate(job_body(command=["echo", "a\x00b"]))


def test_argv_has_a_total_size_limit(api: TestClient, actors: Actors) -> None:
    from queue_service.api.schemas.jobs import MAX_ARGV_BYTES, JobCreate

    args = ["x" * 8000] * (MAX_ARGV_BYTES // 8000 + 1)
    with pytest.raises(ValueError, match="at most"):
        JobCreate.model_validate(job_body(command=args))
    JobCreate.model_validate(job_body(command=["x" * 8000] * 10))  # well inside: accepted


def test_dynamic_loader_variables_are_reserved(api: TestClient, actors: Actors) -> None:
    for name in ("LD_AUDIT", "LD_PRELOAD", "LD_DEBUG_OUTPUT", "LD_BIND_NOW", "LD_ORIGIN_PATH"):
        assert reserved_env_name(name)
        response = api.post("/v1/jobs", json=job_body(env={name: "/tmp/x.so"}), headers=auth(actors.admin))
        assert response.status_code == 422
        assert _shape(response)["field"] == "env"
    assert not reserved_env_name("OLD_LD_PATH")  # only the prefix


def test_duplicate_json_keys_nan_and_infinity_are_refused(api: TestClient, actors: Actors) -> None:
    json_headers = auth(actors.admin) | {"content-type": "application/json"}
    for raw in ('{"name": "a", "name": "b", "command": ["true"], "resources": {"gpus": 1}}',
                '{"command": ["true"], "resources": {"gpus": 1, "gpus": 2}}'):
        response = api.post("/v1/jobs", content=raw, headers=json_headers)
        assert response.status_code == 422
        assert "duplicate key" in _shape(response)["detail"]
    for raw in ('{"guaranteed": NaN}', '{"guaranteed": Infinity}'):
        assert api.put("/v1/projects/alpha/quota", content=raw, headers=json_headers).status_code == 422


def test_log_parameters_are_bounded_by_their_columns(api: TestClient, actors: Actors) -> None:
    register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.admin)
    for query in (f"stdout_offset={BIG64}", f"stderr_offset={BIG64}", f"attempt={BIG32}", f"attempt={BIG64}",
                  "stdout_offset=-1"):
        assert api.get(f"/v1/jobs/{job['id']}/logs?{query}", headers=auth(actors.admin)).status_code == 422
    ok = api.get(f"/v1/jobs/{job['id']}/logs?stdout_offset={BIG64 - 1}&attempt={BIG32 - 1}",
                 headers=auth(actors.admin))
    assert ok.status_code == 200, ok.text


def test_audit_parameters_are_bounded(api: TestClient, actors: Actors) -> None:
    for query in (f"before_id={BIG32}", f"before_id={BIG64}", "limit=100000"):
        assert api.get(f"/v1/audit?{query}", headers=auth(actors.admin)).status_code == 422
    assert api.get(f"/v1/audit?before_id={BIG32 - 1}", headers=auth(actors.admin)).status_code == 200


AGENT_BODIES = [
    ("/v1/agent/logs", {"node_name": "n1", "job_id": "j", "attempt": 1, "stream": "stdout", "offset": BIG64,
                        "data_b64": ""}),
    ("/v1/agent/started", {"node_name": "n1", "job_id": "j", "attempt": BIG32}),
    ("/v1/agent/exited", {"node_name": "n1", "job_id": "j", "attempt": 1, "reason": "exited", "exit_code": BIG32}),
    ("/v1/agent/adopt", {"node_name": "n1", "attempts": [{"job_id": "j", "attempt": 1, "replica": BIG32}]}),
]


def test_agent_integers_are_bounded(api: TestClient, actors: Actors) -> None:
    for path, body in AGENT_BODIES:
        assert api.post(path, json=body, headers=auth(actors.admin)).status_code == 422, path


BAD_DATES = ["month=9999-12", "month=0000-01", "month=2026-13", "start=9999-12-31T23:59:59-01:00",
             "end=0001-01-01T00:00:00", "start=2026-02-01T00:00:00&end=2026-01-01T00:00:00"]


def test_dates_are_bounded(api: TestClient, actors: Actors) -> None:
    for query in BAD_DATES:
        for path in ("/v1/usage", "/v1/projects/alpha/usage"):
            response = api.get(f"{path}?{query}", headers=auth(actors.admin))
            assert response.status_code == 422, (path, query, response.text)
    assert api.get("/v1/usage?month=2999-12", headers=auth(actors.admin)).status_code == 200


def test_column_sized_path_parameters_are_refused_not_truncated(api: TestClient, actors: Actors) -> None:
    response = api.put("/v1/priority-classes/" + "a" * 33, json={"value": 1}, headers=auth(actors.admin))
    assert response.status_code == 422
    response = api.post("/v1/jobs", json=job_body(priority_class="p" * 33), headers=auth(actors.admin))
    assert response.status_code == 422


def test_timestamps_in_answers_say_they_are_utc(api: TestClient, actors: Actors) -> None:
    job = submit(api, actors.admin)
    for value in (job["submitted_at"], api.get("/v1/projects", headers=auth(actors.admin)).json()[0]["created_at"],
                  api.get("/v1/audit", headers=auth(actors.admin)).json()["data"][0]["at"]):
        parsed = datetime.fromisoformat(value)
        assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0, value


def test_validation_errors_have_the_documented_shape(api: TestClient, actors: Actors) -> None:
    response = api.post("/v1/jobs", json={"command": ["true"], "resources": {}}, headers=auth(actors.admin))
    body = _shape(response)
    assert body["field"] == "resources"
    assert body["errors"] and {"field", "message"} <= set(body["errors"][0])
    schema = api.get("/openapi.json").json()
    answers = schema["paths"]["/v1/jobs"]["post"]["responses"]
    for code in ("401", "403", "404", "409", "422"):
        ref = answers[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorPublic"), (code, ref)
    props = schema["components"]["schemas"]["ErrorPublic"]["properties"]
    assert {"detail", "field", "state", "errors"} <= set(props)
    assert "HTTPValidationError" not in json.dumps(schema)


def test_a_nul_is_refused_naming_where_it_is(api: TestClient, actors: Actors) -> None:
    response = api.post("/v1/jobs", json=job_body(command=["a", "b\u0000"], env={"A": "x\u0000"}),
                        headers=auth(actors.admin))
    assert _shape(response)["field"] in ("command.1", "env.A")
    response = api.post("/v1/jobs", json=job_body(env={"A\u0000": "x"}), headers=auth(actors.admin))
    assert _shape(response)["field"] == "env"

"""Secrets stay secret: env values masked for all but admins and the job's own members, /metrics behind a
token when configured, launch specs carrying only their own job."""

from __future__ import annotations

import pytest

from tests import builders
from tests.api.helpers import attempt_ref, auth, get_job, started, submit

SECRET = {"WANDB_API_KEY": "wandb-s3cret", "SEED": "7"}
MASKED = {"WANDB_API_KEY": "***", "SEED": "***"}


def test_env_values_are_masked_but_for_admins_and_the_projects_members(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = submit(api, actors.member_a, project="alpha", env=SECRET)
    assert job["env"] == SECRET, "the submitter sees what it sent"
    for who, expected in (("admin", SECRET), ("member_a", SECRET), ("operator", MASKED), ("viewer", MASKED)):
        token = getattr(actors, who)
        assert get_job(api, token, job["id"])["env"] == expected, who
        listed = api.get("/v1/jobs", headers=auth(token)).json()["data"]
        assert [j["env"] for j in listed if j["id"] == job["id"]] == [expected], who
    assert api.get(f"/v1/jobs/{job['id']}", headers=auth(actors.member_b)).status_code == 404
    # Operator actions answer with the job: masked there too.
    held = api.post(f"/v1/jobs/{job['id']}/hold", headers=auth(actors.operator))
    assert held.status_code == 200 and held.json()["env"] == MASKED and "wandb-s3cret" not in held.text
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.operator))
    assert cancelled.status_code == 200 and "wandb-s3cret" not in cancelled.text
    assert "wandb-s3cret" not in api.get("/v1/jobs", headers=auth(actors.viewer)).text


def test_launch_specs_carry_only_their_own_job(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    a = submit(api, actors.member_a, project="alpha", env={"TOKEN_A": "alpha-secret"})
    b = submit(api, actors.member_b, project="beta", env={"TOKEN_B": "beta-secret"})
    ctx.admitter.run_once()
    a, b = get_job(api, actors.admin, a["id"]), get_job(api, actors.admin, b["id"])
    assert started(api, actors.agent, a).status_code == 200
    answer = api.post("/v1/agent/adopt", json={"node_name": "n1", "attempts": [attempt_ref(a)]},
                      headers=auth(actors.agent))
    assert answer.status_code == 200, answer.text
    [kept] = answer.json()["keep"]
    assert kept["spec"]["env"] == {"TOKEN_A": "alpha-secret"} and kept["spec"]["job_id"] == a["id"]
    own = set(kept["spec"]["gpu_uuids"])
    assert own and not own & {x["gpu_uuid"] for x in b["allocation"]}
    assert "beta-secret" not in str(kept) and b["id"] not in str(kept)


@pytest.mark.parametrize("mode", ["token", "auth"])
def test_metrics_can_require_a_token(mode, api, ctx, actors) -> None:
    assert api.get("/metrics").status_code == 200, "open by default (one host)"
    if mode == "token":
        ctx.settings.metrics_token = "scrape-me-" + "x" * 20
    else:
        ctx.settings.metrics_auth = True
    response = api.get("/metrics")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert api.get("/metrics", headers=auth("gpuq_wrong")).status_code == 401
    for who in ("member_a", "agent"):
        assert api.get("/metrics", headers=auth(getattr(actors, who))).status_code == 403, who
    for who in ("viewer", "operator", "admin"):
        response = api.get("/metrics", headers=auth(getattr(actors, who)))
        assert response.status_code == 200 and "gpuq_" in response.text, who
    if mode == "token":
        assert api.get("/metrics", headers=auth(ctx.settings.metrics_token)).status_code == 200

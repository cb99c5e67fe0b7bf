"""The coexistence table over REST (admins, audited; a table that contradicts itself is refused naming the row)
and end to end through the admitter: an inference job's GPU takes no training work, and the training job waits
with the rule's words."""

from __future__ import annotations

from tests.api.helpers import auth, get_job, submit
from tests.support import builders


def test_the_default_table_and_bad_tables(api, actors) -> None:
    table = api.get("/v1/coexistence", headers=auth(actors.viewer)).json()
    assert table["gpu"]["inference"] == ["inference"]
    assert "experiment" not in table["gpu"]["training"] and "training" not in table["gpu"]["experiment"]
    assert table["node"]["training"] == ["*"]
    bad = [
        ({"gpu": {"training": ["batch", "inference"]}}, "gpu.inference"),  # inference does not admit training
        ({"gpu": {"rendering": ["*"]}}, "gpu.rendering"),  # no such class
        ({"node": {"training": ["trainin"]}}, "node.training"),  # a typo
        ({"node": {"batch": ["*", "training"]}}, "node.batch"),
    ]
    for body, field in bad:
        response = api.put("/v1/coexistence", json=body, headers=auth(actors.admin))
        assert response.status_code == 422 and response.json()["field"] == field, (body, response.text)
    assert api.get("/v1/coexistence", headers=auth(actors.viewer)).json() == table, "nothing changed"
    assert api.put("/v1/coexistence", json={"node": {}}, headers=auth(actors.operator)).status_code == 403
    assert api.put("/v1/coexistence", json={}, headers=auth(actors.admin)).status_code == 422


def test_rules_set_over_rest_are_audited_and_placed_by(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    blocks = {"blocks": 30, "gpu_memory_mib": 4000}
    serving = submit(api, actors.member_a, project="alpha", workload="inference", resources=blocks)
    _cycles(ctx, api, actors, serving)
    assert get_job(api, actors.admin, serving["id"])["state"] in ("admitted", "running")
    training = submit(api, actors.member_a, project="alpha", workload="training", resources=blocks)
    ctx.admitter.run_once()
    ctx.admitter.run_once()
    waiting = get_job(api, actors.admin, training["id"])
    assert waiting["state"] == "queued"
    assert "GPU 0 on n1 holds inference work; training may not share it" in waiting["reason"], waiting["reason"]
    # An admin lets them share (both rows, or the table contradicts itself); the next cycle places it.
    gpu = {"inference": ["inference", "training"], "training": ["batch", "inference", "interactive", "training"]}
    changed = api.put("/v1/coexistence", json={"gpu": gpu, "reason": "one box"}, headers=auth(actors.admin))
    assert changed.status_code == 200, changed.text
    _cycles(ctx, api, actors, training)
    assert get_job(api, actors.admin, training["id"])["state"] in ("admitted", "running")
    [row] = api.get("/v1/audit", params={"action": "coexistence.set"}, headers=auth(actors.admin)).json()["data"]
    assert row["reason"] == "one box" and row["before"]["gpu"]["inference"] == ["inference"]
    assert row["after"]["gpu"]["inference"] == ["inference", "training"]


def _cycles(ctx, api, actors, job: dict, most: int = 3) -> None:
    """Admission cycles until ``job`` is admitted (an idle GPU is turned shared in one cycle, used in the next)."""
    for _ in range(most):
        ctx.admitter.run_once()
        if get_job(api, actors.admin, job["id"])["state"] != "queued":
            return

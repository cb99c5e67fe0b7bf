"""Workload classes and labels on a job: stored, shown, and bad ones refused naming the field."""

from __future__ import annotations

from tests.api.helpers import auth, get_job, job_count, submit
from tests.support import builders


def test_workload_and_labels_are_stored_and_shown_and_bad_ones_refused(api, ctx, actors) -> None:
    job = submit(api, actors.member_a, project="alpha", workload="inference",
                 labels={"feature": "search", "team.cost-centre": "cc-42"})
    assert (job["workload"], job["labels"]) == ("inference", {"feature": "search", "team.cost-centre": "cc-42"})
    again = get_job(api, actors.admin, job["id"])
    assert (again["workload"], again["labels"]) == ("inference", {"feature": "search", "team.cost-centre": "cc-42"})
    plain = submit(api, actors.admin)
    assert (plain["workload"], plain["labels"]) == ("batch", {}), "the default class, no labels"
    _bad_ones_are_refused(api, ctx, actors)


BAD = [
    ("unknown workload class", {"workload": "rendering"}, "workload"),
    ("workload not a name", {"workload": "Training!"}, "workload"),
    ("label key not an identifier", {"labels": {"Feature X": "a"}}, "labels"),
    ("label key starting with a digit", {"labels": {"1abc": "a"}}, "labels"),
    ("label key too long", {"labels": {"k" * 64: "a"}}, "labels"),
    ("label value too long", {"labels": {"feature": "x" * 257}}, "labels"),
    ("label value not a string", {"labels": {"feature": 3}}, "labels"),
    ("17 labels", {"labels": {f"k{i}": "v" for i in range(17)}}, "labels"),
]


def _bad_ones_are_refused(api, ctx, actors) -> None:
    before = job_count(ctx)
    for case, overrides, field in BAD:
        response = api.post("/v1/jobs", json=builders.job_body(**overrides), headers=auth(actors.admin))
        assert response.status_code == 422, (case, response.text)
        answer = response.json()
        assert field in str(answer.get("detail")) or answer.get("field") == field, (case, answer)
    assert job_count(ctx) == before
    ok = submit(api, actors.admin, labels={f"k{i}": "v" * 256 for i in range(16)})
    assert len(ok["labels"]) == 16, "16 labels of 256 characters are allowed"


def _defaults(api, actors) -> None:
    experiment = submit(api, actors.member_a, project="alpha", workload="experiment")
    assert (experiment["priority_class"], experiment["priority"]) == ("experiment", 100), "its priority class"
    interactive = submit(api, actors.member_a, project="alpha", workload="interactive")
    assert interactive["time_limit_s"] == 4 * 3600, "its default time limit"
    asked = submit(api, actors.member_a, project="alpha", workload="interactive", time_limit_s=600)
    assert asked["time_limit_s"] == 600, "what the job asks comes first"
    batch = submit(api, actors.member_a, project="alpha")
    assert (batch["priority_class"], batch["time_limit_s"]) == ("normal", None), "batch changes nothing"
    for overrides, field in (({"workload": "interactive", "time_limit_s": 24 * 3600 + 1}, "time_limit_s"),
                             ({"workload": "experiment", "priority_class": "normal"}, "priority_class"),
                             ({"workload": "training", "priority_class": "experiment"}, "priority_class")):
        response = api.post("/v1/jobs", json=builders.job_body(project="alpha", **overrides),
                            headers=auth(actors.member_a))
        assert response.status_code == 422 and response.json()["field"] == field, (overrides, response.text)


def test_a_class_brings_its_defaults_and_admins_set_classes_over_rest_audited(api, actors) -> None:
    _defaults(api, actors)
    body = {"priority_class": "experiment", "preemptible": True, "max_time_limit_s": 3600, "may_share_gpu": False,
            "reason": "renders are cheap"}
    assert api.put("/v1/workload-classes/rendering", json=body, headers=auth(actors.operator)).status_code == 403
    made = api.put("/v1/workload-classes/rendering", json=body, headers=auth(actors.admin))
    assert made.status_code == 200, made.text
    listed = {c["name"]: c for c in api.get("/v1/workload-classes", headers=auth(actors.member_a)).json()}
    assert listed["rendering"]["may_share_gpu"] is False and set(listed) >= {"training", "inference", "batch"}
    job = submit(api, actors.member_a, project="alpha", workload="rendering")
    assert (job["workload"], job["priority_class"], job["time_limit_s"]) == ("rendering", "experiment", 3600)
    bad = api.put("/v1/workload-classes/rendering", json={"priority_class": "production", "preemptible": True},
                  headers=auth(actors.admin))
    assert bad.status_code == 422 and bad.json()["field"] == "preemptible", bad.text
    unknown = api.put("/v1/workload-classes/x", json={"priority_class": "urgent"}, headers=auth(actors.admin))
    assert unknown.status_code == 422 and unknown.json()["field"] == "priority_class"
    audit = api.get("/v1/audit", params={"action": "workload_class.set"}, headers=auth(actors.admin)).json()["data"]
    assert [(a["target"], a["reason"], a["after"]["may_share_gpu"]) for a in audit] == [
        ("rendering", "renders are cheap", False)], "one row, for the change that was made"

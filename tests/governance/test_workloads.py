"""Workload classes and labels on a job: stored, shown, and bad ones refused naming the field."""

from __future__ import annotations

from tests.api.helpers import auth, get_job, job_count, submit
from tests.support import builders


def test_workload_and_labels_are_stored_and_shown(api, actors) -> None:
    job = submit(api, actors.member_a, project="alpha", workload="inference",
                 labels={"feature": "search", "team.cost-centre": "cc-42"})
    assert (job["workload"], job["labels"]) == ("inference", {"feature": "search", "team.cost-centre": "cc-42"})
    again = get_job(api, actors.admin, job["id"])
    assert (again["workload"], again["labels"]) == ("inference", {"feature": "search", "team.cost-centre": "cc-42"})
    plain = submit(api, actors.admin)
    assert (plain["workload"], plain["labels"]) == ("batch", {}), "the default class, no labels"


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


def test_bad_workloads_and_labels_are_refused_naming_the_field(api, ctx, actors) -> None:
    before = job_count(ctx)
    for case, overrides, field in BAD:
        response = api.post("/v1/jobs", json=builders.job_body(**overrides), headers=auth(actors.admin))
        assert response.status_code == 422, (case, response.text)
        answer = response.json()
        assert field in str(answer.get("detail")) or answer.get("field") == field, (case, answer)
    assert job_count(ctx) == before
    ok = submit(api, actors.admin, labels={f"k{i}": "v" * 256 for i in range(16)})
    assert len(ok["labels"]) == 16, "16 labels of 256 characters are allowed"

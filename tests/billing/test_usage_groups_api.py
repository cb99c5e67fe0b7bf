"""/v1/projects/{p}/usage by workload, user and label: groups add up to the project total; the CSV carries both."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest

from tests import builders
from tests.billing.helpers import finish, pin, running, usage

T0 = datetime(2026, 11, 3, 9, 30)
H = timedelta(hours=1)
WINDOW = {"start": "2026-11-03T00:00:00", "end": "2026-11-04T00:00:00"}


def test_groups_add_up_and_csv_carries_workload_and_labels(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:3")
    specs = [("training", {"feature": "search"}, 2), ("inference", {"feature": "ads", "team": "x"}, 1),
             ("training", {}, 3)]
    jobs = []
    for i, (workload, labels, hours) in enumerate(specs):
        job = running(api, ctx, actors, actors.member_a, project="alpha", name=f"j{i}", workload=workload,
                      labels=labels)
        finish(api, actors, job)
        pin(ctx, job["id"], T0 + i * H, T0 + i * H + hours * H)
        jobs.append(job)
    total = usage(api, actors.member_a, group_by="project", **WINDOW).json()["total"]
    assert total["gpu_hours"] == pytest.approx(6.0) and total["jobs"] == 3
    expect = {"workload": {"training": 5.0, "inference": 1.0},
              "label:feature": {"search": 2.0, "ads": 1.0, "(none)": 3.0},
              "label:team": {"x": 1.0, "(none)": 5.0}, "user": {"member_a": 6.0}}
    for group_by, hours in expect.items():
        body = usage(api, actors.member_a, group_by=group_by, **WINDOW).json()
        assert {r["key"]: r["gpu_hours"] for r in body["rows"]} == pytest.approx(hours), group_by
        assert sum(r["cost"] for r in body["rows"]) == pytest.approx(body["total"]["cost"])
        assert body["total"]["gpu_hours"] == pytest.approx(total["gpu_hours"])
    lines = list(csv.DictReader(io.StringIO(usage(api, actors.member_a, group_by="job", format="csv",
                                                  **WINDOW).text)))
    by_job = {line["key"]: line for line in lines}
    assert by_job[jobs[1]["id"]]["workload"] == "inference"
    assert by_job[jobs[1]["id"]]["labels"] == '{"feature":"ads","team":"x"}'
    assert by_job[jobs[2]["id"]]["labels"] == ""
    for bad in ("label:", "label:Feature!", "workloads"):
        answer = usage(api, actors.member_a, group_by=bad, **WINDOW)
        assert answer.status_code == 422 and "group_by" in answer.text, bad

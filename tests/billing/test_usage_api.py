"""/v1/projects/{p}/usage, /v1/usage and /v1/prices: grouping, windows, CSV, prices over time, isolation."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from queue_service.billing.ledger import db_now
from queue_service.db.billing_models import GpuPrice
from queue_service.db.models import AuditEntry
from tests import builders
from tests.api.helpers import auth
from tests.billing.helpers import finish, pin, reroll, running, usage

T0 = datetime(2026, 10, 31, 22, 0)  # job A: 4 h across midnight, Oct 31 22:00 -> Nov 1 02:00
H = timedelta(hours=1)


@pytest.fixture
def billed(api, ctx, actors) -> dict:
    """Two finished whole-GPU jobs with pinned times, and prices 2.0/h then 4.0/h from Nov 1 01:00."""
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    a = running(api, ctx, actors, actors.member_a, project="alpha", name="a")
    b = running(api, ctx, actors, actors.member_b, project="beta", name="b")
    finish(api, actors, a)
    finish(api, actors, b)
    pin(ctx, a["id"], T0, T0 + 4 * H)
    pin(ctx, b["id"], T0 + 2 * H, T0 + 3 * H)
    with ctx.sessions() as session, session.begin():  # history: written as if set back then
        session.add(GpuPrice(gpu_model="h100-80gb", effective_from=datetime(2026, 1, 1), gpu_hour=2.0))
        session.add(GpuPrice(gpu_model="h100-80gb", effective_from=T0 + 3 * H, gpu_hour=4.0))
    reroll(ctx)  # prices written as if set back then: the rollups priced without them
    return {"a": a, "b": b}


WINDOW = {"start": "2026-10-31T00:00:00", "end": "2026-11-02T00:00:00"}


def test_group_by_day_splits_at_midnight_and_prices_by_period(api, actors, billed) -> None:
    body = usage(api, actors.member_a, group_by="day", **WINDOW).json()
    assert body["projects"] == ["alpha"]
    days = {r["key"]: r for r in body["rows"]}
    assert set(days) == {"2026-10-31", "2026-11-01"}
    assert days["2026-10-31"]["gpu_hours"] == pytest.approx(2.0)
    assert days["2026-10-31"]["cost"] == pytest.approx(4.0)
    assert days["2026-11-01"]["gpu_hours"] == pytest.approx(2.0)
    assert days["2026-11-01"]["cost"] == pytest.approx(2.0 + 4.0)  # 1 h at 2.0, then 1 h at 4.0
    assert body["total"]["gpu_hours"] == pytest.approx(4.0) and body["total"]["cost"] == pytest.approx(10.0)
    assert body["total"]["jobs"] == 1


@pytest.mark.parametrize(
    ("group_by", "key"), [("job", None), ("user", "member_a"), ("gpu_model", "h100-80gb"), ("project", "alpha")]
)
def test_other_groupings(api, actors, billed, group_by, key) -> None:
    body = usage(api, actors.member_a, group_by=group_by, **WINDOW).json()
    [row] = body["rows"]
    assert row["key"] == (key or billed["a"]["id"])
    assert row["gpu_hours"] == pytest.approx(4.0) and row["cost"] == pytest.approx(10.0)


def test_windows_clip_intervals(api, actors, billed) -> None:
    body = usage(api, actors.member_a, start="2026-11-01T00:00:00", end="2026-11-01T01:30:00").json()
    assert body["total"]["gpu_hours"] == pytest.approx(1.5)
    assert body["total"]["cost"] == pytest.approx(1.0 * 2.0 + 0.5 * 4.0)
    month = usage(api, actors.member_a, month="2026-11").json()
    assert month["total"]["gpu_hours"] == pytest.approx(2.0)
    assert usage(api, actors.member_a, month="2026-09").json()["rows"] == []
    assert usage(api, actors.member_a, start="2026-11-02T00:00:00", end="2026-11-01T00:00:00").status_code == 422
    assert usage(api, actors.member_a, month="2026-11", start="2026-11-02T00:00:00").status_code == 422
    assert usage(api, actors.member_a, month="nov").status_code == 422
    assert usage(api, actors.member_a, group_by="week").status_code == 422


def test_csv_for_finance(api, actors, billed) -> None:
    response = usage(api, actors.admin, group_by="day", format="csv", **WINDOW)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["key"] for r in rows] == ["2026-10-31", "2026-11-01", "total"]
    assert float(rows[-1]["cost"]) == pytest.approx(10.0) and rows[-1]["group_by"] == "day"


def test_project_isolation(api, actors, billed) -> None:
    assert usage(api, actors.member_b, **WINDOW).status_code == 404  # alpha is not beta's
    assert usage(api, actors.member_a, "/v1/projects/nope/usage").status_code == 404
    mine = usage(api, actors.member_a, "/v1/usage", **WINDOW).json()
    assert mine["projects"] == ["alpha"] and [r["key"] for r in mine["rows"]] == ["alpha"]
    everyone = usage(api, actors.admin, "/v1/usage", **WINDOW).json()
    assert {r["key"]: r["gpu_hours"] for r in everyone["rows"]} == pytest.approx({"alpha": 4.0, "beta": 1.0})
    assert everyone["total"]["cost"] == pytest.approx(10.0 + 2.0)
    only_beta = usage(api, actors.admin, "/v1/usage", project=["beta"], **WINDOW).json()
    assert only_beta["projects"] == ["beta"]
    assert usage(api, "nonsense", **WINDOW).status_code == 401


def test_a_running_job_counts_up_to_now(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    with ctx.sessions() as session:
        now = db_now(session)
    pin(ctx, job["id"], now - H, None)
    body = usage(api, actors.member_a, start=(now - 2 * H).isoformat(), end=(now + 5 * H).isoformat()).json()
    assert body["total"]["gpu_hours"] == pytest.approx(1.0, abs=0.01)  # not 6: the future is not billed


def test_prices_are_admin_only_audited_and_never_retroactive(api, ctx, actors, billed) -> None:
    before = usage(api, actors.admin, "/v1/usage", **WINDOW).json()["total"]["cost"]
    body = {"gpu_model": "H100-80GB", "gpu_hour": 100.0, "mig_profile_hour": {"3g.40gb": 30.0}}
    assert api.post("/v1/prices", json=body, headers=auth(actors.member_a)).status_code == 403
    past = body | {"effective_from": "2026-10-01T00:00:00Z"}
    response = api.post("/v1/prices", json=past, headers=auth(actors.admin))
    assert response.status_code == 422 and response.json()["field"] == "effective_from"
    response = api.post("/v1/prices", json=body, headers=auth(actors.admin))
    assert response.status_code == 201, response.text
    assert response.json()["gpu_model"] == "h100-80gb"  # NVML / user spellings map to the catalogue key
    assert usage(api, actors.admin, "/v1/usage", **WINDOW).json()["total"]["cost"] == pytest.approx(before)
    listed = api.get("/v1/prices", headers=auth(actors.viewer)).json()
    assert [p["gpu_hour"] for p in listed] == [2.0, 4.0, 100.0]
    with ctx.sessions() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "price.set")).one()
    assert entry.target == "h100-80gb" and entry.before["gpu_hour"] == 4.0 and entry.after["gpu_hour"] == 100.0

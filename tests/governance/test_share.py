"""Fair share charged by what was used (``GPUQ_FAIR_SHARE_CHARGE=used``) and the standing ``gpuq share`` shows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from queue_service.admission.fair_share import UsageInterval, charged, decayed_usage, standings
from queue_service.billing.ledger import db_now
from queue_service.db.models import Allocation
from queue_service.snapshots import fair_share
from tests import builders
from tests.api.helpers import auth
from tests.billing.helpers import running

T0 = datetime(2026, 12, 1, 12)


def test_used_mode_charges_held_times_busy_share_and_never_frees_the_unmeasured() -> None:
    assert charged(1.0, 0.05, "allocated") == 1.0
    assert charged(1.0, 0.05, "used") == pytest.approx(0.05)
    assert charged(0.5, None, "used") == 0.5  # no SM figure (simulated, MIG): charged as held
    assert charged(0.5, 3.0, "used") == 0.5  # a share is at most 1


def test_used_mode_reverses_the_order_of_an_idle_hoarder_and_a_busy_project() -> None:
    # idle: one GPU held for 10 h at 5 % busy; busy: half a GPU for 10 h at 100 %.
    start = T0 - timedelta(hours=10)
    order = {}
    for mode in ("allocated", "used"):
        ivs = [UsageInterval("idle", charged(1.0, 0.05, mode), start, None),
               UsageInterval("busy", charged(0.5, 1.0, mode), start, None)]
        stand = standings(decayed_usage(ivs, now=T0, half_life_s=7 * 86400), {"idle": 1.0, "busy": 1.0})
        order[mode] = sorted(stand, key=stand.__getitem__)  # lower standing runs first
    assert order == {"allocated": ["busy", "idle"], "used": ["idle", "busy"]}


def _post(api, actors, job, *, sm: float) -> None:
    body = {"node_name": "n1", "samples": [{
        "job_id": job["id"], "attempt": job["attempt"], "replica": 0, "gpu_uuid": job["allocation"][0]["gpu_uuid"],
        "window_s": 300.0, "sm_percent": sm, "memory_used_mib": 100}]}
    assert api.post("/v1/agent/samples", json=body, headers=auth(actors.agent)).status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_share_standing_and_the_admitters_order_follow_the_charge_mode(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    hoarder = running(api, ctx, actors, actors.member_a, project="alpha")  # a whole GPU, 5 % busy
    worker = running(api, ctx, actors, actors.member_b, project="beta",
                     resources={"blocks": 50, "gpu_memory_mib": 1024})
    _post(api, actors, hoarder, sm=5)
    _post(api, actors, worker, sm=50)  # all of its half GPU
    with ctx.sessions() as session, session.begin():  # both held for the same hour
        an_hour_ago = db_now(session) - timedelta(hours=1)
        session.execute(update(Allocation).values(created_at=an_hour_ago))

    def ranks() -> dict[str, int]:
        rows = api.get("/v1/share", headers=auth(actors.viewer)).json()["rows"]
        return {r["project"]: r["rank"] for r in rows if r["project"] in ("alpha", "beta")}

    def admitter_order() -> list[str]:
        with ctx.sessions() as session:
            stand = fair_share(session, now=db_now(session), half_life_s=ctx.settings.fair_share_half_life_s,
                               charge=ctx.settings.fair_share_charge)
        return sorted(("alpha", "beta"), key=stand.__getitem__)

    assert ranks()["beta"] < ranks()["alpha"] and admitter_order() == ["beta", "alpha"]
    report = api.get("/v1/share", headers=auth(actors.viewer)).json()
    alpha = next(r for r in report["rows"] if r["project"] == "alpha")
    assert report["charge"] == "allocated" and alpha["allocated_gpu_h"] == pytest.approx(1.0, rel=0.01)
    assert alpha["used_gpu_h"] == pytest.approx(0.05, rel=0.01) and alpha["charged_gpu_h"] == alpha["allocated_gpu_h"]
    assert 0 < alpha["fair_share"] < 1 and alpha["norm_share"] == pytest.approx(1 / 3)

    ctx.settings.fair_share_charge = "used"
    assert ranks()["alpha"] < ranks()["beta"] and admitter_order() == ["alpha", "beta"]
    mine = api.get("/v1/share", headers=auth(actors.member_a)).json()
    assert mine["charge"] == "used" and [r["project"] for r in mine["rows"]] == ["alpha"]
    scraped = api.get("/metrics").text
    assert 'gpuq_fair_share_factor{charge="used",project="alpha"}' in scraped or \
        'gpuq_fair_share_factor{project="alpha",charge="used"}' in scraped
    assert "gpuq_fair_share_standing{" in scraped

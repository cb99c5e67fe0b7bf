"""`gpuq usage` and `gpuq prices` against the app (the CLI's HTTP client swapped for a TestClient)."""

from __future__ import annotations

from datetime import datetime

from typer.testing import CliRunner

from queue_service import cli
from queue_service.db.billing_models import GpuPrice
from tests import builders
from tests.billing.helpers import finish, pin, reroll, running


def _wire(monkeypatch, api, token: str) -> None:
    def init(self, server, tok) -> None:
        self.base, self.token, self.http = "http://testserver", token, api
        api.headers["Authorization"] = f"Bearer {token}"
    monkeypatch.setattr(cli.Api, "__init__", init)


def test_usage_and_prices_commands(api, ctx, actors, monkeypatch) -> None:
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    job = running(api, ctx, actors, actors.member_a, project="alpha")
    finish(api, actors, job)
    pin(ctx, job["id"], datetime(2026, 11, 3, 10), datetime(2026, 11, 3, 13))
    with ctx.sessions() as session, session.begin():
        session.add(GpuPrice(gpu_model="h100-80gb", effective_from=datetime(2026, 1, 1), gpu_hour=2.5))
    reroll(ctx)  # prices written as if set back then: the rollups priced without them
    runner = CliRunner()
    _wire(monkeypatch, api, actors.member_a)
    out = runner.invoke(cli.app, ["usage", "--project", "alpha", "--month", "2026-11"])
    assert out.exit_code == 0, out.output
    assert "2026-11-03" in out.output and "3.00" in out.output and "7.50" in out.output
    out = runner.invoke(cli.app, ["usage", "--project", "alpha", "--month", "2026-11", "--csv"])
    assert out.output.splitlines()[0].startswith("group_by,start,end,key")
    assert runner.invoke(cli.app, ["prices", "set", "h100-80gb", "--gpu-hour", "9"]).exit_code == 1  # a member
    _wire(monkeypatch, api, actors.admin)
    out = runner.invoke(cli.app, ["prices", "set", "h100-80gb", "--gpu-hour", "9", "--mig", "3g.40gb=4"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli.app, ["prices", "list"])
    assert "2.5" in out.output and "9" in out.output and "3g.40gb" in out.output

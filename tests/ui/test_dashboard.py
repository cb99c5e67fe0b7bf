"""The dashboard in headless Chromium against a running server with jobs on simulated GPUs.

Needs Debian's ``chromium`` and pip ``playwright`` (never ``playwright install``):
skipped when either is missing. The screenshot is saved in the test's
output directory (and, with GPUQ_UI_SCREENSHOT=path, copied there).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from queue_service.app import create_app
from queue_service.context import ServiceContext
from queue_service.db.migrate import upgrade
from queue_service.db.models import Role
from queue_service.services import projects, tokens
from queue_service.settings import Settings
from tests import builders

CHROMIUM = "/usr/bin/chromium"
try:
    import playwright.sync_api as playwright_api
except ImportError:  # pragma: no cover - installed by the test extra
    playwright_api = None


@pytest.fixture(autouse=True)
def _browser_available() -> None:
    """Skip locally, fail in CI (CI=true), when the browser or its driver is missing."""
    from tests.services import missing

    if playwright_api is None:
        missing("Playwright", "pip package playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        missing("Chromium", "Debian's chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    """uvicorn on a free port, SQLite, no admitter thread (the test runs cycles)."""
    import uvicorn

    url = f"sqlite:///{tmp_path / 'gpuq.db'}"
    upgrade(url)
    ctx = ServiceContext.build(Settings(data_dir=tmp_path / "data", database_url=url, broker_url="memory://"))
    made = {}
    with ctx.sessions() as session, session.begin():
        for name in ("alpha", "beta", "gamma"):
            projects.ensure(session, name=name)
        for key, role in (("admin", Role.ADMIN), ("agent", Role.AGENT), ("viewer", Role.VIEWER)):
            _row, made[key] = tokens.create(session, role=role, name=key, projects=[], actor="test")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ctx, run_admitter=False), port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/v1/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield base, ctx, made
    srv.should_exit = True
    thread.join(timeout=10)
    ctx.engine.dispose()


def _run(client: httpx.Client, ctx: ServiceContext, tokens_: dict, project: str, resources: dict) -> dict:
    admin = {"Authorization": f"Bearer {tokens_['admin']}"}
    job = client.post("/v1/jobs", json={"name": f"{project}-job", "project": project, "command": ["true"],
                                        "resources": resources}, headers=admin).json()
    ctx.admitter.run_once()
    job = client.get(f"/v1/jobs/{job['id']}", headers=admin).json()
    assert job["state"] == "admitted", job
    ref = {"node_name": job["allocation"][0]["node"], "job_id": job["id"], "attempt": job["attempt"], "replica": 0}
    assert client.post("/v1/agent/started", json=ref,
                       headers={"Authorization": f"Bearer {tokens_['agent']}"}).status_code == 200
    return job


def test_cluster_map_shows_each_projects_blocks(server, tmp_path: Path) -> None:
    base, ctx, made = server
    with httpx.Client(base_url=base) as client:
        inventory = builders.inventory("gpu-node-1", "h100-80gb:3")
        r = client.post("/v1/agent/register", json={"inventory": inventory.to_dict()},
                        headers={"Authorization": f"Bearer {made['agent']}"})
        assert r.status_code == 200, r.text
        _run(client, ctx, made, "alpha", {"blocks": 30, "gpu_memory_mib": 8192})
        _run(client, ctx, made, "beta", {"blocks": 50, "gpu_memory_mib": 8192})
        _run(client, ctx, made, "gamma", {"gpus": 1})
        _run(client, ctx, made, "beta", {"mig": "3g.40gb"})
        # One job that cannot fit, to show a wait reason in the queue.
        client.post("/v1/jobs", json={"name": "waits", "project": "alpha", "command": ["true"],
                                      "resources": {"gpus": 3}}, headers={"Authorization": f"Bearer {made['admin']}"})
        ctx.admitter.run_once()

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/ui?token={made['viewer']}")
        try:
            page.wait_for_selector("body[data-loaded='1']", state="attached", timeout=15000)
        except playwright_api.TimeoutError:
            pytest.fail(f"the dashboard did not load: {page.locator('#status').inner_text()}")
        count = lambda sel: page.locator(sel).count()  # noqa: E731
        assert count(".gpu") == 3
        assert count(".gpu[data-mode='shared'] .block") == 100
        assert count(".block[data-project='alpha']") == 30
        assert count(".block[data-project='beta']") == 50
        assert count(".whole[data-project='gamma']") == 1
        assert count(".slice[data-project='beta'][data-profile='3g.40gb']") == 1
        assert count("#queue tr[data-job]") >= 5
        assert "waits" in page.locator("#queue").inner_text()
        assert count("#usage tr[data-project]") >= 3
        # Usage over time: today's column stacks one bar per project that used something.
        assert count("#usage-chart .day") >= 1
        assert {page.locator("#usage-chart .bar").nth(i).get_attribute("data-project")
                for i in range(count("#usage-chart .bar"))} >= {"alpha", "beta", "gamma"}
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("GPUQ_UI_SCREENSHOT"):
        shutil.copy(shot, os.environ["GPUQ_UI_SCREENSHOT"])

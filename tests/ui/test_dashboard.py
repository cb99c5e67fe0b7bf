"""The dashboard in headless Chromium against a running server with jobs on simulated GPUs: sign-in
(the token never in a URL), a member's view with other projects' holdings drawn as occupied, stable
project colours, and an operator's hold from the job page leaving an audit row.

Needs Debian's ``chromium`` and pip ``playwright`` (never ``playwright install``):
skipped when either is missing. The screenshot is saved in the test's
output directory (and, with GPUQ_UI_SCREENSHOT=path, copied there).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        for key, role, projs in (("admin", Role.ADMIN, []), ("agent", Role.AGENT, []), ("viewer", Role.VIEWER, []),
                                 ("operator", Role.OPERATOR, []), ("member", Role.MEMBER, ["alpha"])):
            _row, made[key] = tokens.create(session, role=role, name=key, projects=projs, actor="test",
                                            node_name="gpu-node-1" if role is Role.AGENT else None)
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


def _cluster(server) -> dict[str, dict]:
    """alpha 30 blocks and beta 50 on a shared GPU, gamma a whole GPU, beta a 3g.40gb; one job waiting."""
    base, ctx, made = server
    with httpx.Client(base_url=base) as client:
        inventory = builders.inventory("gpu-node-1", "h100-80gb:3")
        r = client.post("/v1/agent/register", json={"inventory": inventory.to_dict()},
                        headers={"Authorization": f"Bearer {made['agent']}"})
        assert r.status_code == 200, r.text
        jobs = {"alpha": _run(client, ctx, made, "alpha", {"blocks": 30, "gpu_memory_mib": 8192}),
                "beta": _run(client, ctx, made, "beta", {"blocks": 50, "gpu_memory_mib": 8192}),
                "gamma": _run(client, ctx, made, "gamma", {"gpus": 1}),
                "beta-mig": _run(client, ctx, made, "beta", {"mig": "3g.40gb"})}
        # One job that cannot fit, to show a wait reason in the queue.
        jobs["waits"] = client.post("/v1/jobs", json={"name": "waits", "project": "alpha", "command": ["true"],
                                                      "resources": {"gpus": 3}},
                                    headers={"Authorization": f"Bearer {made['admin']}"}).json()
        ctx.admitter.run_once()
        gamma = jobs["gamma"]
        chunk = {"node_name": "gpu-node-1", "job_id": gamma["id"], "attempt": gamma["attempt"], "replica": 0,
                 "stream": "stdout", "offset": 0, "data_b64": base64.b64encode(b"hello from gamma\n").decode()}
        assert client.post("/v1/agent/logs", json=chunk,
                           headers={"Authorization": f"Bearer {made['agent']}"}).status_code == 200
    return jobs


@contextmanager
def _browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _sign_in(page: Any, base: str, token: str, path: str = "/ui/") -> None:
    page.goto(base + path)
    page.wait_for_selector("#signin-screen:not([hidden])")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    _loaded(page)


def _loaded(page: Any) -> None:
    try:
        page.wait_for_selector("body[data-loaded='1']", state="attached", timeout=15000)
    except playwright_api.TimeoutError:
        pytest.fail(f"the dashboard did not load: {page.locator('#status').inner_text()} "
                    f"{page.locator('#signin-error').inner_text()}")


def test_sign_in_keeps_the_token_out_of_urls(server, tmp_path: Path) -> None:
    base, _ctx, made = server
    _cluster(server)
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        requests: list[tuple[str, str]] = []
        page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization", ""))))
        # Without a token: the sign-in screen, not raw 401 JSON; a ?token= in the address is neither used nor kept.
        page.goto(f"{base}/ui?token={made['viewer']}")
        page.wait_for_selector("#signin-screen:not([hidden])")
        assert made["viewer"] not in page.url
        assert page.locator("#overview").is_hidden()
        assert not any(url.split("?")[0].startswith(f"{base}/v1/") for url, _ in requests)  # nothing fetched
        page.fill("#token", made["viewer"])
        page.click("#signin button[type=submit]")
        _loaded(page)
        assert made["viewer"] not in page.url
        assert page.evaluate("sessionStorage.getItem('gpuq-token')") == made["viewer"]
        assert page.evaluate("localStorage.length") == 0
        api_calls = [(u, a) for u, a in requests if u.startswith(f"{base}/v1/")]
        assert api_calls and all(a == f"Bearer {made['viewer']}" for _, a in api_calls)
        assert not any(made["viewer"] in url for url, _ in requests[1:])  # only the ignored first address had it
        assert page.locator("#token").input_value() == ""
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
        page.reload()  # the tab keeps its session
        _loaded(page)
        page.click("#signout")
        page.wait_for_selector("#signin-screen:not([hidden])")
        assert page.evaluate("sessionStorage.getItem('gpuq-token')") is None
        page.fill("#token", "not-a-token")
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#signin-error:has-text('401')")
        assert page.locator("#overview").is_hidden()
    assert shot.stat().st_size > 10_000
    if os.environ.get("GPUQ_UI_SCREENSHOT"):
        shutil.copy(shot, os.environ["GPUQ_UI_SCREENSHOT"])


def test_a_member_sees_other_projects_as_occupied_in_stable_colours(server) -> None:
    base, _ctx, made = server
    _cluster(server)
    with _browser() as browser:
        member = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(member, base, made["member"])
        count = lambda sel: member.locator(sel).count()  # noqa: E731
        assert count(".block[data-project='alpha']") == 30
        assert count(".block.other[data-project='other project']") == 50  # beta's, drawn occupied
        assert count(".gpu[data-mode='shared'] .block:not(.held)") == 20  # only the truly free ones
        assert count(".whole.other") == 1 and count(".slice.other") == 1
        cluster_text = member.locator("#cluster").inner_text() + member.locator("#legend").inner_text()
        assert "beta" not in cluster_text and "gamma" not in cluster_text
        free = member.locator(".block:not(.held)").first.evaluate("e => getComputedStyle(e).backgroundColor")
        other = member.locator(".block.other").first.evaluate("e => getComputedStyle(e).backgroundColor")
        assert other != free
        admin = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(admin, base, made["admin"])
        colour = lambda page: page.locator(".block[data-project='alpha']").first.evaluate(  # noqa: E731
            "e => getComputedStyle(e).backgroundColor")
        assert colour(member) == colour(admin)  # from the name: the same for every viewer
        assert admin.locator(".block.other").count() == 0


def test_an_operator_holds_a_job_from_its_page_and_it_is_audited(server) -> None:
    base, _ctx, made = server
    jobs = _cluster(server)
    waiting, gamma = jobs["waits"], jobs["gamma"]
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _sign_in(page, base, made["operator"])
        page.click(f"#queue tr[data-job='{waiting['id']}'] a")
        page.wait_for_selector("body[data-page='job'][data-loaded='1']")
        assert page.locator("#timeline tr[data-event]").count() >= 1
        page.fill("#action-reason", "maintenance window")
        page.click("#job-actions button[data-action='hold']")
        page.wait_for_selector("#action-result[data-done='hold']")
        assert page.locator("[data-fact='held']").inner_text() == "true"
        page.goto(f"{base}/ui/#job/{gamma['id']}")  # a running job's page shows its log
        page.wait_for_selector("#stdout:has-text('hello from gamma')")
        member = browser.new_page()
        _sign_in(member, base, made["member"], path=f"/ui/#job/{waiting['id']}")
        assert member.locator("#job-actions").is_hidden()  # members get no operator buttons
    admin = {"Authorization": f"Bearer {made['admin']}"}
    audit = httpx.get(f"{base}/v1/audit", params={"action": "job.hold"}, headers=admin).json()["data"]
    assert [(a["target"], a["reason"]) for a in audit] == [(waiting["id"], "maintenance window")]
    assert "operator" in audit[0]["actor"]
    assert httpx.get(f"{base}/v1/jobs/{waiting['id']}", headers=admin).json()["held"] is True

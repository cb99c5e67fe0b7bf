"""Webhooks against a real local HTTP receiver: signed, retried with backoff, unique event ids,
a delivery log, and nothing for a project without a hook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from queue_service.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign, verify
from tests.api.helpers import auth, submit


class Receiver:
    """A local HTTP server that answers 500 ``fail_first`` times, then 200, and keeps what it got."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append((dict(self.headers.items()), body))
                failing = len(outer.got) <= outer.fail_first
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.server.shutdown()


def test_signing_round_trip_and_replay_window() -> None:
    body = b'{"id":1}'
    header = sign("s3cret", body, timestamp=1_000_000)
    assert verify("s3cret", body, header, now=1_000_010)
    assert not verify("other", body, header, now=1_000_010)
    assert not verify("s3cret", body + b" ", header, now=1_000_010)
    assert not verify("s3cret", body, header, now=1_000_000 + 3600), "an old signature is a replay"
    assert not verify("s3cret", body, "garbage", now=1_000_000)


def test_events_are_signed_retried_and_logged(api, ctx, actors, receiver: Receiver) -> None:
    ctx.settings.webhook_backoff_s = 0.0  # retry at the next pass
    made = api.post("/v1/projects/alpha/webhooks", json={"url": receiver.url, "events": ["cancelled"]},
                    headers=auth(actors.member_a))
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_")
    assert "secret" not in api.get("/v1/projects/alpha/webhooks", headers=auth(actors.member_a)).json()[0]
    job = submit(api, actors.member_a, project="alpha")
    api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(actors.member_a))
    submit(api, actors.member_b, project="beta")  # a project without a hook: nothing is sent for it
    for _ in range(3):  # two failures, then the receiver answers 200
        ctx.webhooks.run_once()
    bodies = [json.loads(b) for _h, b in receiver.got]
    # Only the chosen event (not "queued"), once per try: it fails twice and gets through on the third.
    assert [b["type"] for b in bodies] == ["job.cancelled"] * 3, bodies
    assert len({b["id"] for b in bodies}) == 1, "one event, one id, however often it is tried"
    assert all(b["data"]["project"] == "alpha" and b["data"]["job_id"] == job["id"] for b in bodies)
    for headers, body in receiver.got:
        assert verify(hook["secret"], body, headers[SIGNATURE_HEADER], now=int(time.time()))
        assert headers[EVENT_ID_HEADER] == str(json.loads(body)["id"])
    log = api.get(f"/v1/projects/alpha/webhooks/{hook['id']}/deliveries", headers=auth(actors.member_a)).json()
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log["data"]] == [("delivered", 3, 200)]
    assert ctx.webhooks.run_once() == 0, "nothing is sent twice"


def test_a_receiver_that_never_answers_ends_failed(api, ctx, actors) -> None:
    ctx.settings.webhook_backoff_s, ctx.settings.webhook_max_attempts = 0.0, 2
    dead = Receiver(fail_first=99)
    try:
        hook = api.post("/v1/projects/alpha/webhooks", json={"url": dead.url},
                        headers=auth(actors.admin)).json()
        submit(api, actors.admin, project="alpha")
        for _ in range(3):
            ctx.webhooks.run_once()
        log = api.get(f"/v1/projects/alpha/webhooks/{hook['id']}/deliveries", headers=auth(actors.admin)).json()
        assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log["data"]] == [("failed", 2, 500)]
    finally:
        dead.server.shutdown()


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.org/x"}, "url"),
    ({"url": "file:///etc/passwd"}, "url"),
    ({"url": "http://127.0.0.1:9/x", "events": ["exploded"]}, "events.0"),
])
def test_bad_webhooks_are_refused(api, actors, body: dict, field: str) -> None:
    response = api.post("/v1/projects/alpha/webhooks", json=body, headers=auth(actors.member_a))
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert api.get("/v1/projects/alpha/webhooks", headers=auth(actors.member_a)).json() == []


def test_members_subscribe_only_their_projects_and_admins_may_restrict_hosts(api, ctx, actors) -> None:
    other = api.post("/v1/projects/beta/webhooks", json={"url": "http://127.0.0.1:9/x"},
                     headers=auth(actors.member_a))
    assert other.status_code == 404  # a member does not learn other projects exist
    viewer = api.post("/v1/projects/alpha/webhooks", json={"url": "http://127.0.0.1:9/x"},
                      headers=auth(actors.viewer))
    assert viewer.status_code == 403
    ctx.settings.webhook_allowed_hosts = ["hooks.example.org"]
    refused = api.post("/v1/projects/alpha/webhooks", json={"url": "http://127.0.0.1:9/x"},
                       headers=auth(actors.admin))
    assert refused.status_code == 422 and "hooks.example.org" in refused.json()["detail"]

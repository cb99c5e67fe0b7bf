"""Token checks are cached for at most ``GPUQ_AUTH_CACHE_S`` (1 s): revocation and role changes still take effect.

The cache's clock is the test's: within the window a changed token may still
pass (that is the documented cost of the cache), one window later it never does.
"""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import update

from queue_service.api.deps import PrincipalCache
from queue_service.auth import Principal
from queue_service.context import ServiceContext
from queue_service.db.models import ApiToken, Role
from queue_service.services import tokens
from tests.conftest import Actors

JOB = {"command": ["true"], "resources": {"gpus": 0}, "project": "alpha"}


def _clocked(api: TestClient, ctx: ServiceContext) -> list[float]:
    now = [1000.0]
    api.app.state.principals = PrincipalCache(ctx.settings.auth_cache_s, clock=lambda: now[0])  # type: ignore[attr-defined]
    return now


def test_revoked_token_refused_once_the_cache_window_passed(api: TestClient, ctx: ServiceContext,
                                                            actors: Actors) -> None:
    assert ctx.settings.auth_cache_s <= 1.0
    now = _clocked(api, ctx)
    headers = Actors.headers(actors.member_a)
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    with ctx.sessions() as session, session.begin():
        principal = tokens.authenticate(session, token=actors.member_a)
        tokens.revoke(session, token_id=principal.token_id, actor="test")
    now[0] += ctx.settings.auth_cache_s
    answer = api.get("/v1/jobs", headers=headers)
    assert answer.status_code == 401, answer.text
    now[0] += 10.0
    assert api.get("/v1/jobs", headers=headers).status_code == 401  # refusals are never cached as accepted


def test_role_change_takes_effect_within_the_cache_window(api: TestClient, ctx: ServiceContext,
                                                          actors: Actors) -> None:
    now = _clocked(api, ctx)
    headers = Actors.headers(actors.member_a)
    assert api.post("/v1/jobs", headers=headers, json=JOB).status_code == 201
    with ctx.sessions() as session, session.begin():
        session.execute(update(ApiToken).where(ApiToken.token_hash == tokens.hash_token(actors.member_a))
                        .values(role=Role.VIEWER.value, projects=[]))
    now[0] += ctx.settings.auth_cache_s
    answer = api.post("/v1/jobs", headers=headers, json=JOB)
    assert answer.status_code == 403, answer.text


def test_cached_principal_is_reused_within_the_window(api: TestClient, ctx: ServiceContext, actors: Actors) -> None:
    """Inside the window no database lookup happens: a revoked token still passes (the documented bound)."""
    now = _clocked(api, ctx)
    headers = Actors.headers(actors.viewer)
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    with ctx.sessions() as session, session.begin():
        tokens.revoke(session, token_id=tokens.authenticate(session, token=actors.viewer).token_id, actor="test")
    now[0] += ctx.settings.auth_cache_s / 2
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    now[0] += ctx.settings.auth_cache_s / 2
    assert api.get("/v1/jobs", headers=headers).status_code == 401


def _count_reads(monkeypatch) -> dict[str, int]:
    """How many single token lookups and batch revalidations reach the database."""
    calls = {"single": 0, "batch": 0}
    single, batch = tokens.authenticate, tokens.authenticate_hashes

    def counted_single(*args, **kwargs):
        calls["single"] += 1
        return single(*args, **kwargs)

    def counted_batch(*args, **kwargs):
        calls["batch"] += 1
        return batch(*args, **kwargs)

    monkeypatch.setattr(tokens, "authenticate", counted_single)
    monkeypatch.setattr(tokens, "authenticate_hashes", counted_batch)
    return calls


def test_tokens_used_less_often_than_the_window_are_revalidated_together(api: TestClient, ctx: ServiceContext,
                                                                         actors: Actors, monkeypatch) -> None:
    """Agents heartbeat every few seconds, longer than the window: their stale entries are read again in one
    query for all of them, not one lookup per request."""
    now = _clocked(api, ctx)
    names = ["n1", "n2", "n3", "n4"]
    agents = [Actors.headers(actors.agent_for(n)) for n in names]
    calls = _count_reads(monkeypatch)
    for headers in agents:
        assert api.get("/v1/nodes", headers=headers).status_code == 200
    assert calls == {"single": 4, "batch": 0}
    for _ in range(3):  # three heartbeat intervals, each longer than the window
        now[0] += 5.0
        for headers in agents:
            assert api.get("/v1/nodes", headers=headers).status_code == 200
    assert calls == {"single": 4, "batch": 3}


def test_a_revalidation_another_token_triggered_drops_a_revoked_one(api: TestClient, ctx: ServiceContext,
                                                                    actors: Actors) -> None:
    now = _clocked(api, ctx)
    first, second = Actors.headers(actors.agent_for("n1")), Actors.headers(actors.agent_for("n2"))
    assert api.get("/v1/nodes", headers=first).status_code == 200
    assert api.get("/v1/nodes", headers=second).status_code == 200
    with ctx.sessions() as session, session.begin():
        revoked = tokens.authenticate(session, token=actors.agent_for("n2"))
        tokens.revoke(session, token_id=revoked.token_id, actor="test")
    now[0] += ctx.settings.auth_cache_s
    assert api.get("/v1/nodes", headers=first).status_code == 200  # revalidates both, n2's is refused now
    answer = api.get("/v1/nodes", headers=second)
    assert answer.status_code == 401, answer.text


def test_revalidation_forgets_tokens_unused_for_a_while(api: TestClient, ctx: ServiceContext, actors: Actors,
                                                        monkeypatch) -> None:
    now = _clocked(api, ctx)
    first, second = Actors.headers(actors.agent_for("n1")), Actors.headers(actors.agent_for("n2"))
    assert api.get("/v1/nodes", headers=first).status_code == 200
    assert api.get("/v1/nodes", headers=second).status_code == 200
    now[0] += PrincipalCache.KEEP_S + 1.0
    assert api.get("/v1/nodes", headers=first).status_code == 200  # revalidated; the second one dropped
    calls = _count_reads(monkeypatch)
    assert api.get("/v1/nodes", headers=second).status_code == 200
    assert calls == {"single": 1, "batch": 0}


class _Reads:
    """A stand-in for the service's read: accepts the hashes in ``accepted``, records each call."""

    def __init__(self, accepted: dict[str, Principal]) -> None:
        self.accepted = accepted
        self.calls: list[list[str]] = []
        self.fail = False

    def __call__(self, hashes: list[str], used: list[Principal]) -> dict[str, Principal]:
        self.calls.append(sorted(hashes))
        if self.fail:
            raise RuntimeError("database away")
        return {h: p for h, p in self.accepted.items() if h in hashes}


def _wait(check, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not check():
        time.sleep(0.01)
    return check()


def test_entries_in_use_are_refreshed_ahead_so_requests_never_wait_for_a_read(monkeypatch) -> None:
    """The refresher re-reads entries in use before their window ends: a request one window after the last
    read finds its entry fresh, with no read of its own; a token the database stopped accepting is dropped."""
    now = [1000.0]
    agent, revoked = Principal(token_id="t1", name="n1", role=Role.AGENT), Principal(token_id="t2", name="n2",
                                                                                     role=Role.AGENT)
    reads = _Reads({"h1": agent})
    monkeypatch.setattr(PrincipalCache, "REFRESH_MIN_ENTRIES", 2)
    cache = PrincipalCache(0.2, read=reads, clock=lambda: now[0])
    cache.put("h1", agent)
    cache.put("h2", revoked)
    now[0] += 0.15  # past half the window: due for a refresh
    assert _wait(lambda: cache.refreshes >= 1)
    assert reads.calls[0] == ["h1", "h2"]
    now[0] += 0.1  # one whole window after the put: only the refresh keeps h1 trusted
    assert cache.get("h1") == agent
    assert cache.get("h2") is None  # the database no longer accepts it: gone
    assert cache.revalidate("h2", reads) is None  # and a request for it finds nothing to trust


def test_the_refresher_ends_when_the_database_is_away_and_its_entries_expire(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(PrincipalCache, "REFRESH_MIN_ENTRIES", 1)
    reads = _Reads({})
    reads.fail = True
    cache = PrincipalCache(0.2, read=reads, clock=lambda: now[0])
    cache.put("h1", Principal(token_id="t1", name="n1", role=Role.AGENT))
    now[0] += 0.15
    assert _wait(lambda: len(reads.calls) >= 1)
    assert cache.get("h1") is not None  # within its window it is still trusted
    now[0] += 0.1
    assert _wait(lambda: cache._refresher is None), "the thread ended once nothing could be trusted"
    assert cache.get("h1") is None


def test_a_few_tokens_start_no_refresher() -> None:
    """An idle server's one local agent: a refresh every half window would read ten times per heartbeat."""
    cache = PrincipalCache(0.2, read=_Reads({}), clock=lambda: 1000.0)
    for i in range(PrincipalCache.REFRESH_MIN_ENTRIES - 1):
        cache.put(f"h{i}", Principal(token_id=f"t{i}", name=f"n{i}", role=Role.AGENT))
    assert cache._refresher is None
    cache.put("one-more", Principal(token_id="t", name="n", role=Role.AGENT))
    assert cache._refresher is not None
    cache.close()


def test_the_service_cache_refreshes_and_revocation_still_lands_within_the_window(
        api: TestClient, ctx: ServiceContext, actors: Actors, monkeypatch) -> None:
    """The real cache and the real database, on the real clock: an agent token in use stays cached across
    windows, and a revoked one is refused within the window's bound."""
    monkeypatch.setattr(PrincipalCache, "REFRESH_MIN_ENTRIES", 1)
    headers = Actors.headers(actors.agent_for("n1"))
    assert api.get("/v1/nodes", headers=headers).status_code == 200
    cache = api.app.state.principals  # type: ignore[attr-defined]
    assert cache.read is not None
    for _ in range(3):
        time.sleep(ctx.settings.auth_cache_s / 2)
        assert api.get("/v1/nodes", headers=headers).status_code == 200
    assert cache.refreshes >= 2
    with ctx.sessions() as session, session.begin():
        tokens.revoke(session, token_id=tokens.authenticate(session, token=actors.agent_for("n1")).token_id,
                      actor="test")
    time.sleep(ctx.settings.auth_cache_s + 0.05)
    answer = api.get("/v1/nodes", headers=headers)
    assert answer.status_code == 401, answer.text

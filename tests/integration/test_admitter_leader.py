"""Several API processes, one admitter (``admitter.leader``): one leads, the others' wakes reach it as a
``NOTIFY``, and when the leader's connection goes another process takes the lead and cycles at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from queue_service.admitter.leader import Leadership
from queue_service.admitter.loop import Admitter, _libpq_dsn
from queue_service.context import ServiceContext
from tests.conftest import _postgres_database

RETRY_S = 0.1


def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def dsn() -> Iterator[str]:
    """A fresh PostgreSQL database (advisory locks and notifications are per database), as libpq names it."""
    for url in _postgres_database():
        engine = create_engine(url)
        yield _libpq_dsn(sessionmaker(engine))
        engine.dispose()


def test_one_leads_and_hears_the_wakes_of_the_other(dsn: str) -> None:
    heard = threading.Event()
    wrongly_woken: list[str] = []
    first = Leadership(dsn, on_wake=heard.set, retry_s=RETRY_S).start()
    assert _until(lambda: first.is_leader)
    second = Leadership(dsn, on_wake=lambda: wrongly_woken.append("second"), retry_s=RETRY_S).start()
    try:
        time.sleep(5 * RETRY_S)  # the second has tried for the lead several times by now
        assert first.is_leader and not second.is_leader
        assert not wrongly_woken, "a process that does not lead is never woken"
        heard.clear()
        second.relay()
        assert heard.wait(5), "the other process's wake reached the leader"
        assert not wrongly_woken
    finally:
        second.stop()
        first.stop()


def test_a_leader_whose_wake_fails_gives_up_the_lead_and_another_takes_it(dsn: str) -> None:
    """A thread that fails while it leads never keeps believing it leads: its lock went with its connection."""
    failures = [0]

    def failing() -> None:
        failures[0] += 1
        raise RuntimeError("wake failed")

    first = Leadership(dsn, on_wake=failing, retry_s=RETRY_S).start()
    assert _until(lambda: failures[0] >= 1)
    second = Leadership(dsn, on_wake=lambda: None, retry_s=RETRY_S).start()
    try:
        assert _until(lambda: second.is_leader or first.is_leader)
        assert not (first.is_leader and second.is_leader)
        for _ in range(20):  # never two leaders at once while the first keeps failing and retrying
            assert not (first.is_leader and second.is_leader)
            time.sleep(RETRY_S / 2)
    finally:
        second.stop()
        first.stop()


def test_the_lead_passes_on_when_the_leader_goes(dsn: str) -> None:
    first = Leadership(dsn, on_wake=lambda: None, retry_s=RETRY_S).start()
    assert _until(lambda: first.is_leader)
    took_lead = threading.Event()
    second = Leadership(dsn, on_wake=took_lead.set, retry_s=RETRY_S).start()
    try:
        time.sleep(5 * RETRY_S)
        assert not second.is_leader and not took_lead.is_set()
        first.stop()  # its connection closes: PostgreSQL drops its lock
        assert _until(lambda: second.is_leader), "the other process took the lead"
        assert took_lead.is_set(), "taking the lead wakes its admitter: one cycle covers what nobody heard"
        assert second.terms == 1
    finally:
        second.stop()
        first.stop()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_admitter_that_does_not_lead_never_cycles_and_relays_its_wakes(ctx: ServiceContext) -> None:
    settings = ctx.settings.model_copy(update={"api_processes": 2})
    heard = threading.Event()
    dsn = _libpq_dsn(ctx.sessions)
    leader = Leadership(dsn, on_wake=heard.set, retry_s=RETRY_S).start()
    assert _until(lambda: leader.is_leader)
    follower = Admitter(sessions=ctx.sessions, settings=settings, packer_factory=ctx.admitter.packer_factory)
    assert follower.leadership is not None
    follower.leadership.retry_s = RETRY_S
    follower.leadership.start()
    try:
        time.sleep(5 * RETRY_S)
        assert not follower.leads
        assert follower.run_once().skipped, "only the leader cycles"
        heard.clear()
        follower.wake()
        assert heard.wait(5), "its wake went to the leader"
        assert not follower._wake.is_set()
        leader.stop()
        assert _until(lambda: follower.leads)
        assert follower._wake.is_set(), "taking the lead asks for a cycle at once"
        assert not follower.run_once().skipped
    finally:
        follower.leadership.stop()
        leader.stop()


def test_a_process_that_may_not_lead_never_does_and_relays(dsn: str) -> None:
    """An API process beside the admitter process (``replicas``): it relays, and never takes the lead even
    while nobody holds it (the supervisor starts a new admitter process instead)."""
    relay = Leadership(dsn, on_wake=lambda: None, retry_s=RETRY_S, may_lead=False).start()
    try:
        time.sleep(5 * RETRY_S)
        assert not relay.is_leader and relay.terms == 0, "nobody leads, and still it does not"
        heard = threading.Event()
        leader = Leadership(dsn, on_wake=heard.set, retry_s=RETRY_S).start()
        try:
            assert _until(lambda: leader.is_leader)
            heard.clear()
            relay.relay()
            assert heard.wait(5), "its wake reached the leader"
        finally:
            leader.stop()
    finally:
        relay.stop()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_admitter_that_may_not_lead_runs_no_loop(ctx: ServiceContext) -> None:
    settings = ctx.settings.model_copy(update={"api_processes": 2})
    relay = Admitter(sessions=ctx.sessions, settings=settings, packer_factory=ctx.admitter.packer_factory,
                     may_lead=False)
    relay.start()
    try:
        assert relay._thread is None, "cycles and reconciliation are the admitter process's"
        assert relay.leadership is not None and relay.leadership._thread is not None
        assert relay.run_once().skipped
    finally:
        relay.stop()

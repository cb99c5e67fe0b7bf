"""Typed dependencies: the service context, a transaction, the calling principal.

Authentication is cached (:class:`PrincipalCache`): a token looked up in
the database is trusted for ``GPUQ_AUTH_CACHE_S`` (default 1 s, at most
1 s) without asking again, so a revocation, a role or project change, an
approver flag or an expiry takes effect at most that long after it is
committed — on every replica, since each asks the database again once
its entry is older. Only accepted tokens are cached: a new token works at
once, and a refused one is refused every time from the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from queue_service.auth import Principal, hash_token
from queue_service.context import ServiceContext
from queue_service.db.base import utcnow
from queue_service.db.session import read_session, reading
from queue_service.services import tokens

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CACHED_TOKENS = 10_000
SQLITE_WRITE_SLOTS = 8  # writing requests past their dependencies at once on SQLite; the rest wait without a thread


async def get_context(request: Request) -> ServiceContext:
    # async: FastAPI runs a plain ``def`` dependency on a pool thread, a thread hop per request for one attribute
    return request.app.state.ctx


ContextDep = Annotated[ServiceContext, Depends(get_context)]


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def write_slot(request: Request) -> AsyncIterator[None]:
    """On SQLite, a writing request waits here (in the event loop, not on a pool thread) for one of a few slots.

    SQLite's writers queue on one lock (``db.session``). A writer holds it
    from its first statement to its commit, and between the two FastAPI
    needs a pool thread (to serialize the answer): had every pool thread
    been taken by writers waiting for the lock, the holder could never
    finish (a deadlock, then 500s). With a few slots the pool never fills.
    """
    if request.method in READ_METHODS or request.app.state.ctx.engine.dialect.name != "sqlite":
        yield
        return
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(SQLITE_WRITE_SLOTS)
    async with slots:
        yield


async def get_session(request: Request, ctx: ContextDep,
                      _slot: Annotated[None, Depends(write_slot, scope="function")]) -> AsyncIterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises.

    Routes never commit by hand. ``scope="function"`` commits before the
    response is sent (a client that reads right after sees its write), and
    the lifecycle's effects (launches, stops, waking the admitter) go out
    from the commit hook (``lifecycle.effects``), never from a route.
    A GET reads only: on SQLite it never waits for a writer (``db.session``).
    On SQLite the commit runs in the event loop (it takes well under a
    millisecond): one thread hop less while the writer lock is held.
    """
    session = read_session(ctx.sessions) if request.method in READ_METHODS else ctx.sessions()
    inline = ctx.engine.dialect.name == "sqlite"
    try:
        yield session
    except BaseException:
        await _call(session.rollback, inline=inline)
        raise
    else:
        await _call(session.commit, inline=inline)
    finally:
        await _call(session.close, inline=inline)


async def _call(fn: Callable[[], object], *, inline: bool) -> None:
    if inline:
        fn()
    else:
        await run_in_threadpool(fn)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


Reread = Callable[[list[str], list[Principal]], dict[str, Principal]]


@dataclass(slots=True)
class _Entry:
    principal: Principal
    read_at: float  # when the database last accepted it (the cache's clock); trusted until read_at + ttl_s
    used_at: float  # its last request


class PrincipalCache:
    """Accepted tokens by hash, each trusted for ``ttl_s`` after the database last accepted it.

    With ``read`` (the service's) and at least ``REFRESH_MIN_ENTRIES`` entries,
    a thread refreshes ahead: every ``ttl_s / 2`` it re-reads, in one query,
    each entry older than that which was used in the last ``KEEP_S`` (older
    ones are dropped; the thread ends when fewer are left and starts again
    with a later entry). An agent heartbeats every few
    seconds, longer than the window: without it every agent request found its
    entry stale and waited for a revalidation, one at a time behind a lock
    (1,000 hosts: 17 request threads of a process waiting there, heartbeats
    answered in 11 s). A request that still finds its entry stale (the thread
    fell behind) revalidates every stale kept entry itself, as before. No
    entry is ever trusted longer than ``ttl_s`` after the read that accepted
    it, so revocation still takes effect within ``ttl_s``.
    """

    KEEP_S = 30.0  # past the agents' heartbeat interval (5 s by default, 20 s at 1,000 hosts)
    # Fewer entries in use than this, and requests revalidate their own: an idle server's one local agent
    # (a heartbeat every 5 s) cost ten refresh reads per heartbeat instead of one read (0.57 -> 1.03 % of a core).
    REFRESH_MIN_ENTRIES = 16

    def __init__(self, ttl_s: float, *, read: Reread | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.read = read
        self.refreshes = 0  # the refresher's passes that read the database
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._revalidating = threading.Lock()  # one revalidation at a time; the others wait for its answer
        self._refresher: threading.Thread | None = None
        self._closed = threading.Event()

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.read_at + self.ttl_s:
            return None
        entry.used_at = now
        return entry.principal

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._entries) >= MAX_CACHED_TOKENS:
                self._entries = {k: e for k, e in self._entries.items() if e.read_at + self.ttl_s > now}
                if len(self._entries) >= MAX_CACHED_TOKENS:
                    self._entries.clear()
            self._entries[key] = _Entry(principal, now, now)
            if (self.read is not None and self._refresher is None and not self._closed.is_set()
                    and len(self._entries) >= self.REFRESH_MIN_ENTRIES):
                self._refresher = threading.Thread(target=self._refresh_ahead, name="gpuq-auth-refresh",
                                                   daemon=True)
                self._refresher.start()

    def revalidate(self, key: str, read: Reread) -> Principal | None:
        """``key``'s principal once every stale entry kept was read again; None if ``key`` is not (or no longer)
        accepted. ``read(hashes, used)``: the accepted ones of ``hashes`` (``used``: the principals used since
        their last read, whose use it may record)."""
        if key not in self._entries:
            return None
        with self._revalidating:
            fresh = self.get(key)  # another request (or the refresher) revalidated it while this one waited
            if fresh is not None:
                return fresh
            self._reread(read, older_than_s=self.ttl_s, key=key)
            return self.get(key)

    def _reread(self, read: Reread, *, older_than_s: float, key: str = "") -> None:
        """Read again every entry read ``older_than_s`` ago or more that was used in the last ``KEEP_S`` (and
        ``key``'s); drop the unused ones past the window and those the database no longer accepts."""
        now = self.clock()
        with self._lock:
            due = {k: e for k, e in self._entries.items() if now >= e.read_at + older_than_s}
        kept = {k: e for k, e in due.items() if k == key or e.used_at >= now - self.KEEP_S}
        accepted = read(list(kept), [e.principal for e in kept.values() if e.used_at > e.read_at]) if kept else {}
        with self._lock:
            for k, entry in due.items():
                if self._entries.get(k) is not entry:  # put anew meanwhile
                    continue
                if k in accepted:
                    entry.principal, entry.read_at = accepted[k], now
                elif k in kept or now >= entry.read_at + self.ttl_s:
                    del self._entries[k]

    def _refresh_ahead(self) -> None:
        assert self.read is not None
        while not self._closed.wait(self.ttl_s / 2):
            try:
                with self._revalidating:
                    self._reread(self.read, older_than_s=self.ttl_s / 2)
                    self.refreshes += 1
            except Exception:  # the database is away: requests revalidate (and are refused) on their own
                log.warning("refreshing the token cache failed; requests will revalidate", exc_info=True)
                with self._lock:  # what is past its window cannot be trusted anyway: the thread ends with them
                    now = self.clock()
                    self._entries = {k: e for k, e in self._entries.items() if now < e.read_at + self.ttl_s}
            with self._lock:
                if len(self._entries) < self.REFRESH_MIN_ENTRIES:  # put starts it again when there are more
                    self._refresher = None
                    return
        with self._lock:
            self._refresher = None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Stop the refresher (the service is stopping); entries are still used until their window ends."""
        self._closed.set()


def principal_cache(request: Request) -> PrincipalCache:
    cache = getattr(request.app.state, "principals", None)
    if cache is None:
        ctx = request.app.state.ctx
        cache = request.app.state.principals = PrincipalCache(
            ctx.settings.auth_cache_s, read=lambda hashes, used: _reread(ctx, hashes, used))
    return cache


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _authenticate(ctx: ServiceContext, token: str) -> Principal:
    """The database's word on ``token``, in a short read (a 401 never holds a lock); records the use."""
    with reading(ctx.sessions) as session:
        principal = tokens.authenticate(session, token=token or None)
    now = utcnow()
    if principal.last_used_at is None or principal.last_used_at < now - timedelta(seconds=tokens.LAST_USED_EVERY_S):
        tokens.touch(ctx.sessions, principal=principal, now=now)  # at most one UPDATE a minute per token
        principal = replace(principal, last_used_at=now)
    return principal


def _reread(ctx: ServiceContext, hashes: list[str], used: list[Principal]) -> dict[str, Principal]:
    """A cache's revalidation: the accepted ones of ``hashes`` in one short read; the uses of ``used`` recorded
    (one UPDATE, at most once a minute per token, as for a single lookup)."""
    with reading(ctx.sessions) as session:
        accepted = tokens.authenticate_hashes(session, hashes=hashes)
    tokens.touch_many(ctx.sessions, principals=[p for p in used if p.token_id in
                                                {a.token_id for a in accepted.values()}])
    return accepted


def _lookup(ctx: ServiceContext, cache: PrincipalCache, token: str, key: str) -> Principal:
    """On a pool thread: a stale entry revalidated (with every other stale one), else the database's word."""
    if key:
        revalidated = cache.revalidate(key, lambda hashes, used: _reread(ctx, hashes, used))
        if revalidated is not None:
            return revalidated
    principal = _authenticate(ctx, token)  # unknown, revoked, expired: the refusal says which
    cache.put(key, principal)
    return principal


async def get_principal(request: Request) -> Principal:
    """The caller: from the cache when its entry is fresh (no thread, no database), else from the database."""
    token = _bearer(request)
    cache = principal_cache(request)
    key = hash_token(token) if token else ""
    if key:
        cached = cache.get(key)
        if cached is not None:
            return cached
    return await run_in_threadpool(_lookup, request.app.state.ctx, cache, token, key)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]

"""Per-token request rate limits: a token bucket per bearer token; over it, 429 with ``Retry-After``.

Off by default (``GPUQ_RATE_LIMIT_PER_S`` 0). When on, each bearer token
(known or not: guessing tokens is limited too) may make
``GPUQ_RATE_LIMIT_BURST`` requests at once and ``GPUQ_RATE_LIMIT_PER_S``
per second sustained. Requests without a token (``/v1/health``, the
dashboard's static files) are not counted. The buckets live in the
process: with several API replicas, each enforces the limit on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_BUCKETS = 100_000  # the least recently used are dropped past this (they come back full)


class Buckets:
    """Token buckets by key; ``take`` answers 0 (go) or the seconds until one request is allowed."""

    def __init__(self, *, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
            wait_s = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait_s = (1.0 - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        return wait_s


class RateLimit:
    """ASGI middleware: 429 + ``Retry-After`` (whole seconds) for a token over its rate."""

    def __init__(self, app, *, rate_per_s: float, burst: int) -> None:
        self.app = app
        self.buckets = Buckets(rate_per_s=rate_per_s, burst=burst)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return await self.app(scope, receive, send)
        wait_s = self.buckets.take(hashlib.sha256(token.strip()).hexdigest())
        if wait_s <= 0:
            return await self.app(scope, receive, send)
        retry_after = max(1, math.ceil(wait_s))
        body = json.dumps({"detail": f"rate limit: {self.buckets.rate_per_s:g} requests/s per token; "
                                     f"retry in {retry_after} s", "field": None}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode())]})
        await send({"type": "http.response.body", "body": body})

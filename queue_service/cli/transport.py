"""The CLI's HTTP client, on the standard library's ``http.client``.

Importing httpx (with httpcore, and the click/rich/pygments its own CLI pulls in) took about 0.3 s of each
``gpuq`` command on a 2-core box; a command makes one to a few JSON requests to one server, which
``http.client`` does in a few milliseconds of import. The interface is the part of httpx's ``Client`` the
CLI uses (``request``/``get`` with ``params`` and ``json``; a response with ``status_code``, ``content``,
``text`` and ``json()``), so tests can hand the CLI a FastAPI ``TestClient`` instead.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit


class TransportError(Exception):
    """No answer from the server: refused, unreachable, timed out, reset, or not HTTP. The text says which."""


class Response:
    """One answer, read whole (the CLI's answers are small JSON documents or a CSV)."""

    def __init__(self, status_code: int, reason: str, content: bytes) -> None:
        self.status_code = status_code
        self.reason_phrase = reason
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` if it is not (as httpx's)."""
        return jsonlib.loads(self.content)


def query_value(value: Any) -> str:
    """A query parameter as httpx writes it: ``true``/``false`` for booleans, ``""`` for None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def why(exc: BaseException, timeout_s: float) -> str:
    """A transport failure in words, for the CLI's message."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
        return "the connection was closed"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({exc.__class__.__name__})"
    return str(exc) or exc.__class__.__name__


class Client:
    """Requests to one server over one kept-alive connection, opened on first use."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "gpuq-cli", **(headers or {})}
        self.timeout_s = timeout
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:  # ssl is imported by http.client already; the context is made only for https
            import ssl

            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None) -> Response:
        target = self.prefix + path
        if params:
            target += "?" + urlencode([(k, query_value(v)) for k, v in params.items()])
        headers = dict(self.headers)
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        # A kept-alive connection the server has closed fails on first use; one retry on a fresh one (httpx does
        # the same): the request was not read, so sending it again does not do it twice.
        for reused in (self._connection is not None, False):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request(method, target, body=body, headers=headers)
                answer = self._connection.getresponse()
                content = answer.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
                    continue
                raise TransportError(why(exc, self.timeout_s)) from exc
            if answer.will_close:
                self.close()
            return Response(answer.status, answer.reason, content)
        raise AssertionError("unreachable: the second try either returns or raises")

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Response:
        return self.request("GET", path, params=params)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

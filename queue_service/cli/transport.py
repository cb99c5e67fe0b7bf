"""The CLI's HTTP client: HTTP/1.1 over a plain socket, JSON in and out.

Importing httpx (with httpcore, and the click/rich/pygments its own CLI pulls in) took about 0.3 s of each
``gpuq`` command on a 2-core box, and even ``http.client`` costs 50 ms of imports (the email parser, ssl);
a command makes one to a few small requests to one server. This speaks what those need: a request with a
``Content-Length`` body, an answer with a ``Content-Length``, chunked or read-to-close body, kept alive
between requests. ``ssl`` is imported for an ``https://`` server only. The interface is the part of httpx's
``Client`` the CLI uses (``request``/``get`` with ``params`` and ``json``; a response with ``status_code``,
``content``, ``text`` and ``json()``), so tests can hand the CLI a FastAPI ``TestClient`` instead.
"""

from __future__ import annotations

import json as jsonlib
import socket
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

MAX_LINE = 65536  # a status or header line longer than this is not an answer from gpuq


class TransportError(Exception):
    """No answer from the server: refused, unreachable, timed out, reset, or not HTTP. The text says which."""

    def __init__(self, text: str, *, refused: bool = False) -> None:
        super().__init__(text)
        self.refused = refused  # nothing listens there: the server is likely not running


class Closed(ConnectionError):
    """The server closed the connection before answering (a kept-alive one it dropped while idle)."""


class NotHttp(Exception):
    """What came back is not an HTTP/1.x answer."""


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
    if isinstance(exc, ConnectionError):
        return "the connection was closed"
    if isinstance(exc, NotHttp):
        return f"not an HTTP answer: {exc}"
    return str(exc) or exc.__class__.__name__


def read_line(reader: IO[bytes]) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise NotHttp("a line of more than 64 KiB")
    return line


def read_answer(reader: IO[bytes], method: str) -> tuple[Response, bool]:
    """One answer from ``reader`` and whether the connection stays open after it."""
    while True:
        status_line = read_line(reader)
        if not status_line:
            raise Closed("closed before answering")
        version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise NotHttp(repr(status_line[:80]))
        headers: dict[str, str] = {}
        while (line := read_line(reader)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if not 100 <= int(code) < 200:  # an interim 1xx answer is followed by the real one
            break
    keep = version != "HTTP/1.0" and headers.get("connection", "").lower() != "close"
    if method == "HEAD" or int(code) in (204, 304):
        content = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        content = read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        content = reader.read(length)
        if len(content) < length:
            raise Closed("closed in the middle of the answer")
    else:  # no length: the body runs to the end of the connection
        content, keep = reader.read(), False
    return Response(int(code), reason, content), keep


def read_chunked(reader: IO[bytes]) -> bytes:
    parts: list[bytes] = []
    while True:
        size_text = read_line(reader).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise NotHttp(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while read_line(reader) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) < size:
            raise Closed("closed in the middle of the answer")
        parts.append(chunk)
        read_line(reader)  # the CRLF after the chunk


class Client:
    """Requests to one server over one kept-alive connection, opened on first use."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Host": parts.netloc.rpartition("@")[2], "Accept": "application/json",
                        "User-Agent": "gpuq-cli", **(headers or {})}
        self.timeout_s = timeout
        self._socket: socket.socket | None = None
        self._reader: IO[bytes] | None = None

    def _connect(self) -> tuple[socket.socket, IO[bytes]]:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        if self.https:  # imported here: ssl is 15 ms a command that talks plain http does not need
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        return sock, sock.makefile("rb")

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None) -> Response:
        target = quote(self.prefix + path, safe="/%:@!$&'()*+,;=~")  # a project name with a space, as httpx
        if params:
            target += "?" + urlencode([(k, query_value(v)) for k, v in params.items()])
        headers = dict(self.headers)
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        if body or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        head = "".join([f"{method} {target} HTTP/1.1\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items()), "\r\n"])
        message = head.encode("latin-1") + body
        # A kept-alive connection the server has closed fails on first use; one retry on a fresh one (httpx does
        # the same): the server closed it without reading the request, so sending it again does not do it twice.
        for reused in (self._socket is not None, False):
            try:
                if self._socket is None or self._reader is None:
                    self._socket, self._reader = self._connect()
                self._socket.sendall(message)
                answer, keep = read_answer(self._reader, method)
            except (OSError, NotHttp, ValueError) as exc:
                self.close()
                if reused and isinstance(exc, Closed | BrokenPipeError | ConnectionResetError):
                    continue
                raise TransportError(why(exc, self.timeout_s),
                                     refused=isinstance(exc, ConnectionRefusedError)) from exc
            if not keep:
                self.close()
            return answer
        raise AssertionError("unreachable: the second try either returns or raises")

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Response:
        return self.request("GET", path, params=params)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._socket is not None:
            self._socket.close()
        self._socket = self._reader = None

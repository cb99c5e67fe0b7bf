"""The one place that maps domain errors to HTTP answers, and the guard every request passes first.

Every 4xx answer has one shape (:class:`ErrorPublic`): ``detail`` for
people, ``field`` naming what was wrong (``null`` when nothing in
particular), ``state`` on a 409 about a job (its state now) and, for
validation errors, ``errors`` (one per field). ``ERROR_RESPONSES`` puts
that shape in the OpenAPI document for every route.

:class:`InputGuard` refuses, before any route runs, what no route can
store: NUL bytes in the path, the query or any JSON string (PostgreSQL
text cannot hold them), JSON objects that repeat a key (which one would
win is the parser's choice, not the caller's), and ``NaN``/``Infinity``
(not JSON).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from queue_service.errors import (
    Conflict,
    Forbidden,
    GpuqError,
    InvalidRequest,
    NotFound,
    Unauthenticated,
)


class FieldError(BaseModel):
    """One field's validation error."""

    field: str
    message: str


class ErrorPublic(BaseModel):
    """Every 4xx answer."""

    detail: str = Field(description="what was wrong, for people")
    field: str | None = Field(default=None, description="the field (dotted path) at fault, if one is")
    state: str | None = Field(default=None, description="on a 409 about a job: the job's state now")
    errors: list[FieldError] | None = Field(default=None, description="validation errors, one per field")


_WHY = {
    400: "Malformed request", 401: "Missing, invalid, revoked or expired token", 403: "The caller may not do this",
    404: "Not found (or not visible to the caller)", 409: "Clashes with the current state",
    413: "Request body too large", 422: "Invalid request", 429: "Too many requests (see Retry-After)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorPublic, "description": why} for code, why in _WHY.items()
}

STATUS: list[tuple[type[GpuqError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
]


def _status(exc: GpuqError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 400


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(GpuqError)
    async def _domain(_request: Request, exc: GpuqError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        content: dict[str, object] = {"detail": exc.message, "field": exc.field}
        if isinstance(exc, Conflict) and exc.job_state is not None:
            content["state"] = exc.job_state  # the job's current state: a 409 says what it clashed with
        return JSONResponse(status_code=_status(exc), content=content, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        messages = []
        for err in errors:
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            messages.append(f"{_field(tuple(err.get('loc', ())))}: {msg}")
        first = errors[0] if errors else {}
        return JSONResponse(
            status_code=422,
            content={
                "detail": "; ".join(messages) or "invalid request",
                "field": _field(tuple(first.get("loc", ()))) if first else None,
                "errors": [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg")} for e in errors],
            },
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": "conflicts with existing data", "field": None})

    @app.exception_handler(DataError)
    async def _data(_request: Request, exc: DataError) -> JSONResponse:
        # The last line: a value the schemas let through that the column cannot hold (each is a bug to bound).
        return JSONResponse(status_code=422, content={"detail": "a value does not fit its column", "field": None})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc.detail), "field": None},
                            headers=getattr(exc, "headers", None))


def _refuse(status: int, detail: str, field: str | None) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"detail": detail, "field": field}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, body


class _BadJson(ValueError):
    """The JSON body holds something no route accepts."""

    def __init__(self, message: str, *, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _BadJson(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _constant(name: str) -> float:
    raise _BadJson(f"{name} is not JSON")


def _check_strings(value: Any) -> None:
    """Raise ``_BadJson`` naming the dotted path of the first string (or key) holding a NUL."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise _BadJson("NUL bytes are not allowed in text", field=path or "body")
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise _BadJson("NUL bytes are not allowed in names", field=path or "body")
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(item))


def check_json(raw: bytes) -> None:
    """Raise ``_BadJson`` for a repeated key, a NUL in any string, NaN or Infinity; invalid JSON is left to FastAPI."""
    try:
        value = json.loads(raw, object_pairs_hook=_pairs, parse_constant=_constant)
    except _BadJson:
        raise
    except ValueError:
        return  # not JSON at all: FastAPI answers it with its own 422
    _check_strings(value)


class InputGuard:
    """ASGI middleware: 422 for NUL bytes in the path or query, and for JSON bodies ``check_json`` refuses."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if "\x00" in scope.get("path", "") or b"\x00" in unquote_to_bytes(scope.get("raw_path") or b""):
            return await self._send(send, 422, "NUL bytes are not allowed in the path", "path")
        if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            return await self._send(send, 422, "NUL bytes are not allowed in the query", "query")
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
        if scope.get("method") not in ("POST", "PUT", "PATCH") or b"json" not in content_type:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            check_json(raw)
        except _BadJson as exc:
            return await self._send(send, 422, f"{exc.field}: {exc}", exc.field)
        return await self.app(scope, _replay([{"type": "http.request", "body": raw, "more_body": False}], receive),
                              send)

    @staticmethod
    async def _send(send, status: int, detail: str, field: str | None) -> None:
        start, body = _refuse(status, detail, field)
        await send(start)
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict[str, Any]], then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, whatever the Content-Length says."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await self._too_large(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        try:
            return await self.app(scope, limited_receive, send)
        except _TooLarge:
            return await self._too_large(send)

    async def _too_large(self, send) -> None:
        body = b'{"detail":"request body too large (limit %d bytes)","field":"body"}' % self.max_bytes
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(StarletteHTTPException):
    """The body passed the limit while streaming.

    An HTTPException, because FastAPI turns any other error raised while it
    reads the body into a 400 ("error parsing the body"); an HTTPException
    is re-raised and answered 413 by the exception middleware.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body too large (limit {max_bytes} bytes)")

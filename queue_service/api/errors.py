"""The one place that maps domain errors to HTTP answers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from queue_service.errors import (
    Conflict,
    Forbidden,
    GpuqError,
    InvalidRequest,
    NotFound,
    Unauthenticated,
)

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

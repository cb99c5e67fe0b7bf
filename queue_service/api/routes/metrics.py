"""/metrics: Prometheus text format, without a token (scrapers carry none; see queue_service.metrics).

A plain Starlette route, not an API route: the API (and its OpenAPI document) is all under /v1.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response


def _metrics(request: Request) -> Response:  # sync: Starlette runs it in a thread (it queries the database)
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def mount(app: FastAPI) -> None:
    app.add_route("/metrics", _metrics, include_in_schema=False)

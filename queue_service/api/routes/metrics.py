"""/metrics: Prometheus text format; open by default, behind a bearer token when configured.

- ``GPUQ_METRICS_TOKEN`` set: a scraper sends ``Authorization: Bearer <that
  token>``; any API token of role viewer, operator or admin is taken too.
- ``GPUQ_METRICS_AUTH=true`` without a metrics token: a viewer+ API token.
- Neither (the default, one host): no token, as scrapers expect.

The metrics name projects, their cost and usage, nodes and GPU UUIDs, so a
shared cluster should set one. Prometheus::

    scrape_configs:
      - job_name: gpuq
        authorization: {type: Bearer, credentials_file: /etc/prometheus/gpuq.token}
        static_configs: [{targets: ["gpuq.example:8000"]}]

A plain Starlette route, not an API route: the API (and its OpenAPI document) is all under /v1.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from queue_service.context import ServiceContext
from queue_service.db.models import Role
from queue_service.errors import Unauthenticated
from queue_service.services import tokens

READERS = (Role.ADMIN, Role.OPERATOR, Role.VIEWER)


def _refusal(request: Request, ctx: ServiceContext) -> Response | None:
    """None when the caller may read the metrics, else the 401 / 403 to send."""
    settings = ctx.settings
    if not settings.metrics_token and not settings.metrics_auth:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if settings.metrics_token and token and hmac.compare_digest(token.encode(), settings.metrics_token.encode()):
        return None
    try:
        with ctx.sessions() as session:
            principal = tokens.authenticate(session, token=token or None)
    except Unauthenticated as exc:
        return JSONResponse({"detail": str(exc), "field": None}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    if principal.role not in READERS:
        return JSONResponse({"detail": f"role {principal.role.value} may not read /metrics (needs viewer, operator "
                                       "or admin, or GPUQ_METRICS_TOKEN)", "field": None}, status_code=403)
    return None


def _metrics(request: Request) -> Response:  # sync: Starlette runs it in a thread (it queries the database)
    refused = _refusal(request, request.app.state.ctx)
    if refused is not None:
        return refused
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def mount(app: FastAPI) -> None:
    app.add_route("/metrics", _metrics, include_in_schema=False)

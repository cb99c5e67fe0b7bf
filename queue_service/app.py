"""create_app(): routers, error handlers, the admitter's lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from queue_service import __version__, ui
from queue_service.api import errors
from queue_service.api.ratelimit import RateLimit
from queue_service.api.routes import admin, agent, jobs, operator, prices, samples, usage, webhooks
from queue_service.api.routes import approvals as approval_routes
from queue_service.api.routes import metrics as metrics_routes
from queue_service.api.routes import share as share_routes
from queue_service.api.routes import workloads as workload_routes
from queue_service.context import ServiceContext
from queue_service.metrics import build_registry


def create_app(ctx: ServiceContext, *, run_admitter: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if run_admitter:
            ctx.start_background()
        try:
            yield
        finally:
            ctx.submits.stop()  # what is queued is committed and answered first
            cache = getattr(_app.state, "principals", None)
            if cache is not None:
                cache.close()
            if run_admitter:
                ctx.stop_background()

    app = FastAPI(
        title="gpuq",
        version=__version__,
        description="A GPU batch job queue for bare-metal and Docker GPU hosts.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    errors.install(app)
    v1 = APIRouter(prefix="/v1", responses=errors.ERROR_RESPONSES)  # every 4xx: errors.ErrorPublic
    v1.include_router(admin.health_router)  # first: routes are matched in order, and monitors poll it
    v1.include_router(jobs.router)
    v1.include_router(workload_routes.router)
    v1.include_router(operator.router)
    v1.include_router(admin.router)
    v1.include_router(agent.router)
    v1.include_router(samples.router)
    v1.include_router(usage.router)
    v1.include_router(prices.router)
    v1.include_router(webhooks.router)
    v1.include_router(approval_routes.router)
    v1.include_router(share_routes.router)
    app.include_router(v1)
    app.state.metrics_registry = build_registry(ctx)
    metrics_routes.mount(app)
    ui.mount(app)
    app.add_middleware(errors.InputGuard)  # NULs, repeated JSON keys, NaN: refused before any route
    if ctx.settings.rate_limit_per_s > 0:  # per token, 429 + Retry-After (off by default)
        app.add_middleware(RateLimit, rate_per_s=ctx.settings.rate_limit_per_s, burst=ctx.settings.rate_limit_burst)
    app.add_middleware(errors.BodyLimit, max_bytes=ctx.settings.max_body_bytes)  # outermost: bounds what is read
    return app

"""The dashboard: static HTML/JS/CSS served at /ui; it reads the REST API with the viewer's token."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import RedirectResponse

STATIC_DIR = Path(__file__).parent / "static"


async def _to_index(request: Request) -> RedirectResponse:
    query = request.url.query  # keep ?token=… across the redirect
    return RedirectResponse("/ui/" + (f"?{query}" if query else ""))


async def _to_ui(request: Request) -> RedirectResponse:
    """``/`` is the dashboard (the API lives under /v1, its docs at /docs)."""
    return RedirectResponse("/ui/")


def mount(app: FastAPI) -> None:
    """Serve ``/ui/`` from the package (no build step); ``/ui`` redirects there.

    Plain Starlette routes, not API routes: the API (and its OpenAPI document) is all under /v1.
    """
    app.add_route("/", _to_ui, include_in_schema=False)
    app.add_route("/ui", _to_index, include_in_schema=False)
    app.mount("/ui/", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

"""The dashboard: static HTML/JS/CSS served at /ui; it reads the REST API with the viewer's token.

The token is typed on its sign-in screen and kept in the tab's sessionStorage, sent as an
Authorization header: never in a URL, so never in access logs (README, "Dashboard").
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import RedirectResponse

STATIC_DIR = Path(__file__).parent / "static"


async def _to_index(request: Request) -> RedirectResponse:
    return RedirectResponse("/ui/")  # a query (an old ?token=…) is not carried on: tokens stay out of URLs


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

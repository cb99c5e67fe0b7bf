"""The dashboard: static HTML/JS/CSS served at /ui; it reads the REST API with the viewer's token."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Serve ``/ui/`` from the package (no build step); ``/ui`` redirects there."""

    @app.get("/ui", include_in_schema=False)
    def _ui(request: Request) -> RedirectResponse:
        query = request.url.query  # keep ?token=… across the redirect
        return RedirectResponse("/ui/" + (f"?{query}" if query else ""))

    app.mount("/ui/", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

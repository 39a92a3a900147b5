"""The browser side of the server: the playground at ``/`` and Swagger UI at ``/docs``, both offline.

Everything a page loads comes from this process: the playground's own files (``server/static``, plain
HTML, CSS and JavaScript, no build step) and Swagger UI's bundle from the ``fastapi-offline`` package
(FastAPI's default ``/docs`` pulls it from a CDN and renders blank without internet). The pages and
their assets hold no data, so they answer without an API key; the API calls they make carry the key
the user types into the page. A Content-Security-Policy of ``'self'`` makes the browser itself refuse
anything from another origin.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
#: Paths that answer without a key: the pages and their assets (no job data in them).
PAGE_PATHS = frozenset({"/", "/docs"})
ASSET_PREFIX = "/static/"
#: Blob URLs are how the page plays and downloads videos fetched with an Authorization header;
#: Swagger UI inlines styles and data-URI images.
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def is_public(path: str) -> bool:
    """Whether ``path`` is a page or page asset (served without a key)."""
    return path in PAGE_PATHS or path.startswith(ASSET_PREFIX)


class PageSecurityHeaders:
    """Adds the CSP (and ``Referrer-Policy: no-referrer``) to the pages and their assets only: the API's
    JSON answers stay as they were."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_public(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", CSP.encode()),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    """Mount the static files and the two pages on ``app`` (built with ``docs_url=None``). Every role
    serves them, and they need nothing of the process's runtime; a function rather than a router,
    because mounts travel through ``include_router`` only in recent FastAPI versions."""
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_DIR), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="playground")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

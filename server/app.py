"""The HTTP API: OpenAI-style video jobs with per-request reward guidance.

``create_app`` puts together what a process serves: its runtime (``server.runtime``, built for its
``--role``), started and stopped by the app's lifespan; the layers in front of the routes
(``server.middleware``: Host, Origin, key and body size, and a JSON answer with ``Connection: close``
even for a bug rather than a dropped connection); the routers its role serves (``server.api``); the
browser pages (``server.playground``). Every error is an OpenAI-shaped
``{"error": {"message", "type", "param", "code"}}`` (``server.errors``) with a 4xx status naming the
field and the limit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from server import access_log, openapi_doc, playground
from server.api import routers_for
from server.config import ServerConfig
from server.errors import APIError, install_error_handlers
from server.hosted_model import HostedModel
from server.middleware import BearerAuth, BodyLimit, HostCheck, OriginCheck, ResponseGuard
from server.origin_policy import HostPolicy
from server.runtime import ServerRuntime, build_runtime
from server.store import StoreError
from server.tenancy import KeyRing

log = logging.getLogger("nrg.server")


def create_app(config: ServerConfig, models: dict[str, HostedModel]) -> FastAPI:
    """The app of a ``config.role`` process over already loaded ``models`` (see ``server.config.load_models``);
    its runtime is ``app.state.runtime``."""
    runtime = build_runtime(config, models)
    app = FastAPI(title="nrg-serve", version="0.1.0", lifespan=_lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-style video jobs, steered per request by Flow-NRG reward guidance.")
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_exception_handler(StoreError, _store_unavailable)
    keys = KeyRing(config.api_keys, [config.admin_key] if config.admin_key else [])
    _add_middleware(app, config, keys)
    access_log.install()
    for router in routers_for(config.role):
        app.include_router(router)
    openapi_doc.install(app, runtime.resolver.request_model, auth=keys.enabled)
    playground.install(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: ServerRuntime = app.state.runtime
    await runtime.start()
    yield
    await runtime.stop()


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A store that fails a request is the server's fault, for now: 503 with a retry hint."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return APIError(503, f"the job store is unavailable: {exc}", code="store_unavailable",
                    headers={"Retry-After": "5"}).response()


def _add_middleware(app: FastAPI, config: ServerConfig, keys: KeyRing) -> None:
    """The layers in front of the routes. ``add_middleware`` wraps: the last added is the outermost (see
    ``server.middleware`` for the order)."""
    app.add_middleware(BodyLimit, max_body_bytes=config.limits.max_body_bytes,
                       upload_limits={"/v1/videos": config.limits.max_upload_body_bytes})
    app.add_middleware(BearerAuth, keys=keys)
    app.add_middleware(playground.PageSecurityHeaders)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])
    app.add_middleware(OriginCheck, cors_origins=tuple(config.cors_origins))
    app.add_middleware(HostCheck, policy=HostPolicy(config.host, config.allowed_hosts))
    app.add_middleware(ResponseGuard)

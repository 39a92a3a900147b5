"""The ASGI layers in front of the routes, outermost first:

``ResponseGuard``  every response says ``X-Content-Type-Options: nosniff``; every 5xx says
                   ``Connection: close`` (a client must not reuse a connection after a server bug);
                   an exception that escapes a route becomes a JSON 500 instead of a dropped connection;
                   a client gone mid-body is no error.
``HostCheck``      400 ``invalid_host`` for a ``Host`` the :class:`HostPolicy` refuses (DNS rebinding), for
                   two ``Host`` headers (a proxy and the app could each read another one), and for an
                   HTTP/1.1 request without one (RFC 9112 3.2); uvicorn's httptools parser lets both by.
``OriginCheck``    403 ``cross_origin_forbidden`` for a state-changing request from a foreign origin.
(CORS)             Starlette's CORSMiddleware, only for ``--cors-origin`` origins.
``PageSecurityHeaders`` a Content-Security-Policy on the playground's pages (``server.playground``).
``BearerAuth``     401 with ``WWW-Authenticate: Bearer`` without a valid key (the pages need none); names
                   the caller (``request.state.caller``, ``server.tenancy``) for the routes.
``BodyLimit``      413 once a body passes ``max_body_bytes``, counted as it streams in (chunked or not),
                   so memory never grows with what a client sends.

Pure ASGI rather than ``@app.middleware("http")``: the body limit has to sit on ``receive`` itself.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import APIError, error_response
from server.origin_policy import HostPolicy, normalise_origin, same_origin
from server.playground import is_public
from server.tenancy import SINGLE_TENANT, Caller, KeyRing

log = logging.getLogger("nrg.server")

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Routes that answer without a key (liveness probes); the playground's pages and assets are public too
#: (``server.playground.is_public``), their API calls are not.
PUBLIC_PATHS = frozenset({"/health"})


class ResponseGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if message["status"] >= 500:
                    headers["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except APIError as exc:  # raised outside a route, e.g. by BodyLimit's receive
            if started:
                raise
            await exc.response()(scope, receive, guarded_send)
        except ClientDisconnect:  # gone mid-body (or cut off for sending it too slowly): nobody to answer
            log.debug("client left during %s %s", scope["method"], scope["path"])
        except Exception as exc:
            if started:
                raise  # mid-stream: the server closes the connection, the client sees a truncated body
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")
            await response(scope, receive, guarded_send)


class _Gate:
    """A layer that answers some HTTP requests itself, with a refusal, and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def refusal(self, scope: Scope) -> Response | None:
        """The error response for this request, or None to let it through."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.refusal(scope) if scope["type"] == "http" else None
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HostCheck(_Gate):
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        super().__init__(app)
        self.policy = policy

    def refusal(self, scope: Scope) -> Response | None:
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        if len(hosts) > 1:
            return error_response(400, f"{len(hosts)} Host headers; send exactly one", param="Host",
                                  code="invalid_host")
        if not hosts:
            if scope.get("http_version") == "1.1":
                return error_response(400, "an HTTP/1.1 request needs a Host header", param="Host",
                                      code="invalid_host")
            return None
        host = hosts[0].decode("latin-1")
        if self.policy.allows(host):
            return None
        name = host if len(host) <= 100 else host[:100] + "..."
        return error_response(400, f"Host {name!r} is not allowed; start the server with "
                              "--allowed-host NAME (or NRG_ALLOWED_HOSTS) to accept it",
                              param="Host", code="invalid_host")


class OriginCheck(_Gate):
    """Browsers send ``Origin`` on cross-site requests; a foreign one may read (the missing CORS
    headers keep the page from seeing the answer) but not create or delete jobs, nor preflight."""

    def __init__(self, app: ASGIApp, cors_origins: tuple[str, ...]) -> None:
        super().__init__(app)
        self.allowed = frozenset(normalise_origin(o) for o in cors_origins)

    def _allows(self, origin: str, headers: Headers, scheme: str) -> bool:
        if "*" in self.allowed or normalise_origin(origin) in self.allowed:
            return True
        return same_origin(origin, headers.get("host", ""), scheme)

    def refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        method = scope["method"]
        changes_state = method in STATE_CHANGING or (method == "OPTIONS" and "access-control-request-method" in headers)
        if origin is None or not changes_state or self._allows(origin, headers, scope["scheme"]):
            return None
        return error_response(403, f"cross-origin {method} from {origin[:100]!r} is not allowed; "
                              "start the server with --cors-origin ORIGIN to allow it",
                              param="Origin", code="cross_origin_forbidden")


class BearerAuth:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app, self.keys = app, keys

    def _caller(self, authorization: str) -> Caller | None:
        scheme, _, token = authorization.partition(" ")
        caller = self.keys.caller(token.strip().encode("latin-1"))  # header bytes as sent
        return caller if scheme.lower() == "bearer" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not self.keys.enabled:
            scope.setdefault("state", {})["caller"] = SINGLE_TENANT
        elif path not in PUBLIC_PATHS and not is_public(path):
            caller = self._caller(Headers(scope=scope).get("authorization", ""))
            if caller is None:
                response = error_response(401, "missing or invalid API key (Authorization: Bearer KEY)",
                                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["caller"] = caller
        # Public routes get no caller: a route that reads one there fails closed.
        await self.app(scope, receive, send)


class BodyLimit:
    """``upload_limits``: POST paths whose body may carry an image (``input_reference``) and their larger
    limit; the route holds the rest of such a body to ``max_body_bytes`` itself."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, upload_limits: dict[str, int] | None = None) -> None:
        self.app, self.limit = app, max_body_bytes
        self.upload_limits = dict(upload_limits or {})

    @staticmethod
    def _too_large(what: str) -> APIError:
        # Connection: close, because the rest of the body is never read.
        return APIError(413, f"request body exceeds {what}", code="body_too_large", headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limit, f"max_body_bytes {self.limit}"
        if scope.get("method") == "POST" and scope.get("path") in self.upload_limits:
            limit = self.upload_limits[scope["path"]]
            what = f"max_body_bytes {self.limit} plus room for an input_reference image ({limit} bytes in all)"
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._too_large(what).response()(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large(what)
            return message

        await self.app(scope, counted_receive, send)

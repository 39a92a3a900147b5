"""The one error shape of the API, ``{"error": {"message", "type", "param", "code"}}``, and the handlers
that put everything FastAPI and Starlette would answer on their own (404 of an unknown route, 405,
query validation) into it.

``type`` is ``invalid_request_error`` for 4xx and ``server_error`` for 5xx, as in OpenAI's API, so an
OpenAI SDK raises its usual exception classes.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

#: Codes of the statuses Starlette raises by itself (unknown route, wrong method).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
#: The methods an ``Allow`` header may name.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def error_response(status: int, message: str, param: str | None = None, code: str = "invalid_value",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class APIError(Exception):
    """Raised anywhere below a route to answer ``status`` with the error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_value",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code, self.headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path (Starlette's ``Allow`` names only the first route's).

    Each route is asked whether it takes the path with each method: an included router is one route
    of the app holding several (FastAPI keeps it whole), so its routes' ``methods`` are not at hand. A
    mount takes any method, and names none of its own."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Mount):
            continue
        methods |= {method for method in _METHODS
                    if route.matches({**request.scope, "method": method})[0] is Match.FULL}
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """APIError, query validation and Starlette's own HTTP errors all answer in the error shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_query(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return error_response(400, f"{param}: {first['msg']}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no route {request.url.path}"
        elif exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
            message = f"method {request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        else:
            message = str(exc.detail)
        code = _HTTP_CODES.get(exc.status_code, "invalid_request")
        return error_response(exc.status_code, message, code=code, headers=headers or None)

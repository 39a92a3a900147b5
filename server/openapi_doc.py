"""Makes ``/openapi.json`` say what the server really answers.

FastAPI documents a 422 that this server never sends (every validation error is a 400), does not
know the statuses raised from middleware and handlers, and labels every answer JSON. This adds, per
route, each status it can return with the error schema, the bearer security scheme (applied when
keys are configured), and the real media types of ``/metrics``, ``/content`` and ``/events``.

The event stream's schema describes one event, as OpenAPI 3.2's ``itemSchema`` does and as tools read
``schema`` of ``text/event-stream`` in 3.0 and 3.1 (schemathesis validates each parsed event against
it): an object with the ``event`` name and the ``data`` line, a JSON object whose fields per event
are given in ``contentSchema``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from server.middleware import PUBLIC_PATHS


class ErrorDetail(BaseModel):
    message: str = Field(..., description="What is wrong, naming the field and the limit.")
    type: str = Field(..., description="invalid_request_error (4xx) or server_error (5xx).")
    param: str | None = Field(None, description="The offending field (dotted path) or header, if any.")
    code: str = Field(..., description="Machine-readable reason, e.g. invalid_value, not_found, queue_full.")


class ErrorResponse(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


_HOST = "invalid Host header (invalid_host)"
_ORIGIN = "cross-origin request from an origin not allowed by --cors-origin (cross_origin_forbidden)"
_NOT_FOUND = "no video with this id, or one of another API key's (not_found)"
#: (method, path) -> {status: description}; every route can also answer 400 for its Host and, with
#: keys configured, 401 (except the public routes).
ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/videos"): {
        400: "invalid body: a field out of its limits, malformed JSON or form; or " + _HOST,
        403: _ORIGIN, 413: "body larger than max_body_bytes (body_too_large)",
        429: "queue full, retry after Retry-After seconds (queue_full)", 503: "shutting down (unavailable)",
    },
    ("get", "/v1/videos"): {400: "invalid query parameter; or " + _HOST},
    ("get", "/v1/videos/{video_id}"): {400: _HOST, 404: _NOT_FOUND},
    ("delete", "/v1/videos/{video_id}"): {400: _HOST, 403: _ORIGIN, 404: _NOT_FOUND},
    ("get", "/v1/videos/{video_id}/content"): {
        400: "invalid variant or malformed Range header; or " + _HOST, 404: _NOT_FOUND,
        409: "video not completed yet (video_not_ready)", 410: "video expired, its files deleted (video_expired)",
        416: "Range not satisfiable (range_not_satisfiable)",
    },
    ("get", "/v1/videos/{video_id}/events"): {400: _HOST, 404: _NOT_FOUND},
}
_READY_SCHEMA = {"type": "object", "properties": {"ready": {"type": "boolean"}, "queued": {"type": "integer"}},
                 "required": ["ready", "queued"]}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ID = {"id": {"type": "string"}}
_ERROR = {"error": {"type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}
#: event name -> (what it means, its data's properties, the required ones besides ``id``).
SSE_EVENTS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "queued": ("the job was accepted", {}, []),
    "started": ("the job entered a batch (or runs on a worker since before this stream began)",
                {"batch_size": {"type": "integer"}, "progress": {"type": "integer"}}, []),
    "step": ("one denoising step done",
             {"step": {"type": "integer"}, "steps": {"type": "integer"}, "t": {"type": "number"},
              "rewards": {"type": "object", "additionalProperties": {"type": "number"}}}, ["step", "steps", "t"]),
    "completed": ("the video is ready; the data holds the job's result fields (rewards, timings, ...)", {}, []),
    "failed": ("the job failed; the stream ends", _ERROR, ["error"]),
    "cancelled": ("the job was cancelled; the stream ends", _ERROR, []),
}


def _sse_event(name: str) -> dict[str, Any]:
    description, properties, required = SSE_EVENTS[name]
    data = {"type": "object", "required": ["id", *required], "properties": {**_ID, **properties}}
    return {"type": "object", "description": description, "required": ["event", "data"],
            "properties": {"event": {"const": name},
                           "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data}}}


#: One Server-Sent Event of ``/events`` (``: ping`` comments every 15 s carry no event).
SSE_EVENT_SCHEMA = {"description": "One event of the stream; the stream ends after completed, failed or cancelled.",
                    "oneOf": [_sse_event(name) for name in SSE_EVENTS]}
#: (method, path) -> {status: content} replacing FastAPI's application/json guesses.
MEDIA: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("get", "/metrics"): {"200": {"text/plain": {"schema": {"type": "string"}}}},
    ("get", "/v1/videos/{video_id}/content"): {"200": {"video/mp4": _BINARY, "image/webp": _BINARY},
                                               "206": {"video/mp4": _BINARY, "image/webp": _BINARY}},
    ("get", "/v1/videos/{video_id}/events"): {"200": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}},
    ("get", "/ready"): {"200": {"application/json": {"schema": _READY_SCHEMA}},
                        "503": {"application/json": {"schema": _READY_SCHEMA}}},
}
_DESCRIPTIONS = {"206": "Partial content (Range)", "503": "Not ready: starting or shutting down"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def document(schema: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    """Complete FastAPI's generated ``schema`` in place (see the module docstring); returns it."""
    components = schema.setdefault("components", {})
    named = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        named.pop(unused, None)
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    named.update(error_schema.pop("$defs", {}))
    named["ErrorResponse"] = error_schema
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    if auth:
        schema["security"] = [{"bearer": []}]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            responses.pop("422", None)
            for status, content in MEDIA.get((method, path), {}).items():
                responses.setdefault(status, {"description": _DESCRIPTIONS.get(status, "")})["content"] = content
            errors = ROUTE_ERRORS.get((method, path), {400: _HOST})
            for status, description in errors.items():
                responses[str(status)] = _error(description)
            if path in PUBLIC_PATHS:
                if auth:
                    operation["security"] = []
            elif auth:
                responses["401"] = _error("missing or invalid API key (invalid_api_key)")
    return schema


def install(app: FastAPI, request_model: type[BaseModel], *, auth: bool) -> None:
    """Serve this document as ``app``'s ``/openapi.json``, built at the first request. The POST
    /v1/videos body is read by hand (JSON or form data), so FastAPI cannot see it: ``request_model``
    (the server's limits baked in) goes in as the ``VideoCreateRequest`` schema the route refers to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["VideoCreateRequest"] = body
            app.openapi_schema = document(schema, auth=auth)
        return app.openapi_schema

    app.openapi = openapi

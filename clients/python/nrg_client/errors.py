"""Typed exceptions. Every HTTP error carries the server's ``status``, ``code``, ``param`` and ``message``.

::

    NRGError
    ├── APIConnectionError          the server could not be reached / the connection broke
    │   └── APITimeoutError         an HTTP timeout (connect, read, write, pool)
    ├── APIStatusError              the server answered 4xx/5xx
    │   ├── BadRequestError         400 (param names the field)
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403
    │   ├── NotFoundError           404
    │   ├── ConflictError           409 (e.g. content of a video that is not completed)
    │   ├── PayloadTooLargeError    413
    │   ├── UnprocessableEntityError 422
    │   ├── RateLimitError          429 (after the bounded retries; retry_after in seconds)
    │   └── ServerError             5xx
    │       └── ServiceUnavailableError 503
    ├── ClientValidationError       an argument of the wrong type, refused before sending (also a ValueError)
    ├── WaitTimeout                 wait() ran past its timeout (also a builtin TimeoutError)
    ├── VideoFailedError            generate(): the job ended failed or cancelled
    └── WebhookVerificationError    verify_webhook(): not a genuine, fresh delivery (also a ValueError)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from nrg_client.types import Video

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientValidationError",
    "ConflictError",
    "NRGError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "VideoFailedError",
    "WaitTimeout",
    "WebhookVerificationError",
    "error_from_response",
]


class NRGError(Exception):
    """Base of every error this client raises."""

    status: int | None = None
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status, self.code, self.param = status, code, param


class APIConnectionError(NRGError):
    def __init__(self, message: str = "connection error", *, code: str = "connection_error") -> None:
        super().__init__(message, code=code)


class APITimeoutError(APIConnectionError):
    def __init__(self, message: str = "request timed out") -> None:
        super().__init__(message, code="timeout")


class APIStatusError(NRGError):
    """The server answered with an error status; ``body`` is its parsed JSON (or None)."""

    def __init__(self, message: str, *, status: int, code: str | None = None, param: str | None = None,
                 type: str | None = None, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, status=status, code=code, param=param)
        self.type, self.body, self.headers = type, body, dict(headers or {})

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        return f"{self.status} {self.code or 'error'}: {self.message}{where}"


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    """429 after the client's bounded retries. ``retry_after`` is the server's hint in seconds."""

    @property
    def retry_after(self) -> float | None:
        from nrg_client._base import parse_retry_after

        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(APIStatusError):
    pass


class ServiceUnavailableError(ServerError):
    pass


class ClientValidationError(NRGError, ValueError):
    """An argument the request model refuses (wrong type), raised before anything is sent; ``param``
    names it as the server would (``reward_guidance.window``)."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message, code="invalid_value", param=param)


class WaitTimeout(NRGError, TimeoutError):
    """``wait()`` gave up; ``video`` is the last state seen (None if it was never fetched)."""

    def __init__(self, video_id: str, timeout: float, video: Video | None = None) -> None:
        status = video.status if video is not None else "unknown"
        super().__init__(f"video {video_id} still {status} after {timeout:g}s", code="wait_timeout")
        self.video_id, self.timeout, self.video = video_id, timeout, video


class VideoFailedError(NRGError):
    """The job ended ``failed`` or ``cancelled``; ``video`` holds it, ``code`` the job's error code."""

    def __init__(self, video: Video) -> None:
        error = video.error
        message = f"video {video.id} {video.status}" + (f": {error.message}" if error is not None else "")
        super().__init__(message, code=error.code if error is not None else video.status)
        self.video = video


class WebhookVerificationError(NRGError, ValueError):
    """A webhook that :func:`nrg_client.verify_webhook` refuses: answer it with a 4xx and do not act on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_webhook")


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> APIStatusError:
    """The typed error of an error response (its body must already be read)."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        pass
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or response.reason_phrase)
        code, param, kind = error.get("code"), error.get("param"), error.get("type")
    else:
        text = response.text.strip()
        message = text[:500] if text else response.reason_phrase or f"HTTP {status}"
        code, param, kind = None, None, None
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(message, status=status, code=code, param=param, type=kind, body=body, headers=dict(response.headers))

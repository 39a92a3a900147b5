"""What the sync and async clients share: settings, request bodies, retry policy, SSE decoding."""

from __future__ import annotations

import base64
import email.utils
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from nrg_client import __version__
from nrg_client.errors import APIConnectionError, APITimeoutError, ClientValidationError
from nrg_client.types import Event, VideoCreateParams

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 20.0
#: An SSE stream idle longer than this is dead (the server pings every 15 s).
STREAM_READ_TIMEOUT = 60.0
#: Statuses retried for every method: the server refused the request before doing anything.
RETRY_STATUSES = frozenset({429, 503})
#: Methods also retried after a broken connection or read timeout (the request may have been seen).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Every route the client calls, as (method, OpenAPI path); the contract test checks they exist.
ROUTES = (
    ("post", "/v1/videos"),
    ("get", "/v1/videos"),
    ("get", "/v1/videos/{video_id}"),
    ("delete", "/v1/videos/{video_id}"),
    ("get", "/v1/videos/{video_id}/content"),
    ("get", "/v1/videos/{video_id}/events"),
    ("get", "/v1/models"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
)

VARIANT_SUFFIX = {"video": ".mp4", "thumbnail": ".webp"}


class Settings:
    """Resolved client settings (arguments first, then ``NRG_BASE_URL`` / ``NRG_API_KEY``)."""

    def __init__(self, base_url: str | None, api_key: str | None, timeout: float | httpx.Timeout | None,
                 max_retries: int, max_retry_wait: float, headers: Mapping[str, str] | None) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0; got {max_retries}")
        if max_retry_wait < 0:
            raise ValueError(f"max_retry_wait must be >= 0; got {max_retry_wait}")
        self.base_url = (base_url or os.environ.get("NRG_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("NRG_API_KEY") or None
        if timeout is None:
            self.timeout = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            self.timeout = timeout
        else:
            self.timeout = httpx.Timeout(float(timeout))
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.headers = {"User-Agent": f"nrg-client/{__version__}", "Accept": "application/json", **(headers or {})}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"

    @property
    def stream_timeout(self) -> httpx.Timeout:
        read = self.timeout.read
        return httpx.Timeout(connect=self.timeout.connect, read=max(read or 0.0, STREAM_READ_TIMEOUT),
                             write=self.timeout.write, pool=self.timeout.pool)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(attempt: int, response: httpx.Response | None, max_wait: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After when it sent one,
    else exponential backoff 0.5, 1, 2, ... s; never more than ``max_wait``."""
    hinted = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
    delay = hinted if hinted is not None else 0.5 * 2**attempt
    return min(delay, max_wait)


def should_retry_status(status: int) -> bool:
    return status in RETRY_STATUSES


def should_retry_exception(method: str, exc: httpx.TransportError) -> bool:
    """A connection that was never made can always be retried; a broken one only for idempotent reads."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    return method.upper() in IDEMPOTENT_METHODS


def connection_error(exc: httpx.TransportError, url: str) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{type(exc).__name__} on {url}: {exc or 'timed out'}")
    return APIConnectionError(f"{type(exc).__name__} on {url}: {exc}")


def create_body(
    *,
    prompt: str,
    model: str | None,
    negative_prompt: str | None,
    size: str | tuple[int, int] | None,
    width: int | None,
    height: int | None,
    seconds: float | None,
    num_frames: int | None,
    fps: int | None,
    seed: int | None,
    num_inference_steps: int | None,
    guidance_scale: float | None,
    checkpoint: str | None,
    reward_weights: Mapping[str, float] | None,
    strength: float | None,
    window: tuple[float, float] | None,
    mode: str | None,
    extra_body: Mapping[str, Any] | None,
    particles: int | None = None,
    checkpoint_scale: float | None = None,
    judges: Sequence[str] | None = None,
    judge: str | None = None,
    webhook_url: str | None = None,
    input_reference: str | Path | bytes | None = None,
    denoise_strength: float | None = None,
    compare_unguided: bool | None = None,
    step_cache_threshold: float | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/videos``. ``reward_weights``/``strength``/``window``/``mode``/``particles`` map to
    the server's ``reward_guidance`` object (sent when any of them is given); ``extra_body`` is merged
    last, for fields newer than this client."""
    if isinstance(size, tuple):
        size = f"{int(size[0])}x{int(size[1])}"
    guidance = None
    if any(v is not None for v in (reward_weights, strength, window, mode, particles, judge)):
        guidance = {"weights": reward_weights, "strength": strength, "window": window, "mode": mode,
                    "particles": particles, "judge": judge}
    try:
        params = VideoCreateParams(
            prompt=prompt, model=model, negative_prompt=negative_prompt, size=size, width=width, height=height,
            seconds=seconds, num_frames=num_frames, fps=fps, seed=seed, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, checkpoint=checkpoint, checkpoint_scale=checkpoint_scale,
            reward_guidance=guidance, judges=None if judges is None else list(judges), webhook_url=webhook_url,
            input_reference=None if input_reference is None else input_data_url(input_reference),
            denoise_strength=denoise_strength,
            compare_unguided=compare_unguided, step_cache_threshold=step_cache_threshold,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or None
        raise ClientValidationError(f"{param}: {first['msg']}", param) from None
    body = params.body()
    if extra_body:
        body.update(extra_body)
    return body


#: Leading bytes of the image formats the server takes -> their media type.
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
#: ISO media brands of still images (HEIF, AVIF): an ``ftyp`` box with one of these is not an MP4 clip.
IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")


def media_type_of(data: bytes) -> str | None:
    """The media type of an image (PNG, JPEG, WebP) or video (MP4, WebM) the server takes, from its first
    bytes; None for anything else."""
    media_type = next((kind for magic, kind in IMAGE_SIGNATURES if data.startswith(magic)), None)
    if media_type is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media_type = "image/webp"
    if media_type is None and data[4:8] == b"ftyp" and data[8:12] not in IMAGE_BRANDS:
        media_type = "video/mp4"
    if media_type is None and data[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in data[:64]:
        media_type = "video/webm"
    return media_type


def input_data_url(given: str | Path | bytes) -> str:
    """``input_reference`` as the JSON body carries it: a ``data:`` URL of the image's or video's bytes.
    ``given`` is the file's bytes, a path to it, or a ``data:`` URL already (sent as is). The media type
    is read from the bytes (the server checks it again, with the size and format limits it reports in its
    400s)."""
    if isinstance(given, str) and given.startswith("data:"):
        return given
    if isinstance(given, (bytes, bytearray, memoryview)):
        data = bytes(given)
    else:
        path = Path(given)
        if not path.is_file():
            raise ClientValidationError(f"input_reference: no file at {path}", "input_reference")
        data = path.read_bytes()
    media_type = media_type_of(data)
    if media_type is None:
        raise ClientValidationError("input_reference: not a PNG, JPEG or WebP image nor an MP4 or WebM video",
                                    "input_reference")
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def list_params(after: str | None, limit: int | None, order: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("after", after), ("limit", limit), ("order", order)) if v is not None}


def download_target(path: str | Path, video_id: str, variant: str) -> Path:
    if variant not in VARIANT_SUFFIX:
        raise ValueError(f"variant must be 'video' or 'thumbnail'; got {variant!r}")
    target = Path(path)
    if target.is_dir():
        target = target / f"{video_id}{VARIANT_SUFFIX[variant]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.part")


class SSEDecoder:
    """Server-Sent Events from lines (``event:``, ``data:``, comments, blank line = dispatch)."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> Event | None:
        kind, data = self._event or "message", "\n".join(self._data)
        self._event, self._data = None, []
        if not data:
            return None
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            payload = {"data": data}
        if not isinstance(payload, dict):
            payload = {"data": payload}
        payload.setdefault("id", "")
        return Event.model_validate({**payload, "type": kind})

    def decode(self, lines: Iterable[str]) -> Iterator[Event]:
        for line in lines:
            event = self.feed(line)
            if event is not None:
                yield event


class EventReplay:
    """Reconnecting an SSE stream replays the job's events from its start: skip those already seen."""

    def __init__(self) -> None:
        self.seen = 0
        self._position = 0
        self.done = False

    def restart(self) -> None:
        self._position = 0

    def accept(self, event: Event) -> bool:
        """Whether ``event`` is new; a terminal event is always new (a replay may shorten to it)."""
        self._position += 1
        if event.terminal:
            self.done = True
            return True
        if self._position <= self.seen:
            return False
        self.seen = self._position
        return True

"""The synchronous client. :mod:`nrg_client.async_client` mirrors it method for method."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from nrg_client._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    EventReplay,
    Settings,
    SSEDecoder,
    connection_error,
    create_body,
    download_target,
    list_params,
    retry_delay,
    should_retry_exception,
    should_retry_status,
    temp_path,
)
from nrg_client.errors import APIConnectionError, VideoFailedError, WaitTimeout, error_from_response
from nrg_client.types import (
    Event,
    GeneratedVideo,
    ModelInfo,
    ModelList,
    Video,
    VideoDeleted,
    VideoList,
)

__all__ = ["Client"]


class Client:
    """Talks to one nrg-serve server.

    ``base_url`` defaults to ``$NRG_BASE_URL`` or http://127.0.0.1:8000; ``api_key`` to ``$NRG_API_KEY``
    (sent as ``Authorization: Bearer``). 429 and 503 answers are retried up to ``max_retries`` times,
    waiting the server's ``Retry-After`` (capped at ``max_retry_wait`` seconds) or an exponential
    backoff; then the typed error is raised. ``timeout`` is seconds or an ``httpx.Timeout``.
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._settings = s = Settings(base_url, api_key, timeout, max_retries, max_retry_wait, headers)
        self._http = httpx.Client(base_url=s.base_url, timeout=s.timeout, headers=s.headers, transport=transport)
        #: Retries made so far (429/503 answers and broken connections), for load generators.
        self.retry_count = 0

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------------
    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        self.retry_count += 1
        time.sleep(retry_delay(attempt, response, self._settings.max_retry_wait))

    def _request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                 raise_errors: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                if attempt < self._settings.max_retries and should_retry_exception(method, exc):
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise connection_error(exc, f"{method} {path}") from exc
            if response.is_success or not raise_errors:
                return response
            if should_retry_status(response.status_code) and attempt < self._settings.max_retries:
                self._sleep_before_retry(attempt, response)
                attempt += 1
                continue
            raise error_from_response(response)

    def _open_stream(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """A streaming GET with the same retry policy; the caller must close the response."""
        attempt = 0
        while True:
            request = self._http.build_request("GET", path, params=params, timeout=self._settings.stream_timeout)
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt < self._settings.max_retries and should_retry_exception("GET", exc):
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise connection_error(exc, f"GET {path}") from exc
            if response.is_success:
                return response
            response.read()
            response.close()
            if should_retry_status(response.status_code) and attempt < self._settings.max_retries:
                self._sleep_before_retry(attempt, response)
                attempt += 1
                continue
            raise error_from_response(response)

    # -- videos -----------------------------------------------------------------------------------
    def create(self, prompt: str, *, model: str | None = None, negative_prompt: str | None = None,
               size: str | tuple[int, int] | None = None, width: int | None = None, height: int | None = None,
               seconds: float | None = None, num_frames: int | None = None, fps: int | None = None,
               seed: int | None = None, num_inference_steps: int | None = None,
               guidance_scale: float | None = None, checkpoint: str | None = None,
               checkpoint_scale: float | None = None,
               reward_weights: Mapping[str, float] | None = None, strength: float | None = None,
               window: tuple[float, float] | None = None, mode: str | None = None, particles: int | None = None,
               judge: str | None = None, judges: Sequence[str] | None = None, webhook_url: str | None = None,
               input_reference: str | Path | bytes | None = None, denoise_strength: float | None = None,
               compare_unguided: bool | None = None, step_cache_threshold: float | None = None,
               extra_body: Mapping[str, Any] | None = None) -> Video:
        """Queue a video job (``POST /v1/videos``). Unset arguments take the server's defaults.

        ``reward_weights`` (objective -> weight), ``strength``, ``window`` ``(t_lo, t_hi)`` and ``mode``
        (``"relative"``, ``"sum"``, ``"unit"``, ``"best_of_n"`` or ``"fk"``) and ``particles`` (search modes)
        form the request's ``reward_guidance``; the reward model's
        recommended settings fill in what is left out; without any of them the job is unguided.
        ``judge`` steers by that judge of the server instead of the reward model: it ranks the particles
        of the search modes, and in a gradient mode gives the gradient of its differentiable objectives.
        ``checkpoint_scale`` scales a LoRA checkpoint (0 = base model, 1 = as trained). ``judges`` names the
        server's held-out judges that score the finished video (default all, ``[]`` none): ``judge_scores``.
        ``compare_unguided``: also run the request unguided in the same batch (one more sample) and report its
        figures (``Video.unguided``) and the objectives guidance pushed up whose reward rose while a held-out
        judge's objective of the same name fell (``Video.reward_hacking``); needs guidance.
        ``webhook_url``: the server POSTs the outcome there (a host its operator allows with
        ``--webhook-allow``); check each delivery with :func:`nrg_client.verify_webhook`.
        ``input_reference``: image-to-video, the first frame (PNG, JPEG or WebP) as a path, its bytes or a
        ``data:`` URL; sent as a data: URL. Models say whether they take one (``ModelInfo.input_reference``).
        Video-to-video: a clip (MP4 or WebM) instead, the same ways, noised to ``denoise_strength`` (in
        (0, 1], the share of the schedule run from it; server default 0.8) and the rest of the schedule
        sampled (``ModelInfo.input_reference_video`` says whether a model takes one).
        ``step_cache_threshold``: first-block caching of the job's denoiser calls on a server started with
        ``--step-cache`` (0: every block; default the server's threshold).
        """
        body = create_body(
            prompt=prompt, model=model, negative_prompt=negative_prompt, size=size, width=width, height=height,
            seconds=seconds, num_frames=num_frames, fps=fps, seed=seed, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, checkpoint=checkpoint, checkpoint_scale=checkpoint_scale,
            reward_weights=reward_weights, strength=strength,
            window=window, mode=mode, particles=particles, judge=judge, judges=judges, webhook_url=webhook_url,
            input_reference=input_reference, denoise_strength=denoise_strength, compare_unguided=compare_unguided,
            step_cache_threshold=step_cache_threshold,
            extra_body=extra_body,
        )
        return Video.model_validate(self._request("POST", "/v1/videos", json=body).json())

    def get(self, video_id: str) -> Video:
        return Video.model_validate(self._request("GET", f"/v1/videos/{video_id}").json())

    def list(self, *, after: str | None = None, limit: int | None = None, order: str | None = None) -> VideoList:
        """One page of jobs (``order`` "desc", newest first, by default; ``limit`` 1..100)."""
        response = self._request("GET", "/v1/videos", params=list_params(after, limit, order))
        return VideoList.model_validate(response.json())

    def iter_videos(self, *, order: str = "desc", page_size: int = 100, after: str | None = None) -> Iterator[Video]:
        """Every job, fetching pages of ``page_size`` as the iteration goes."""
        while True:
            page = self.list(after=after, limit=page_size, order=order)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.last_id

    def cancel(self, video_id: str) -> Video:
        """Cancel a queued or running job (a running one leaves its batch at the next step).

        A job that has already finished is returned unchanged (the server's DELETE would delete it; if
        the job finishes between the check and the DELETE, the server deletes it and a ``NotFoundError``
        follows from the re-read)."""
        video = self.get(video_id)
        if video.done:
            return video
        data = self._request("DELETE", f"/v1/videos/{video_id}").json()
        if data.get("object") == "video.deleted":
            return self.get(video_id)
        return Video.model_validate(data)

    def delete(self, video_id: str) -> VideoDeleted:
        """Delete a job and its files; an active job is cancelled first."""
        data = self._request("DELETE", f"/v1/videos/{video_id}").json()
        if data.get("object") != "video.deleted":  # it was active: the first DELETE cancelled it
            data = self._request("DELETE", f"/v1/videos/{video_id}").json()
        return VideoDeleted.model_validate(data)

    def wait(self, video_id: str, *, timeout: float | None = 600.0, poll_interval: float = 0.2,
             max_poll_interval: float = 2.0) -> Video:
        """Poll until the job is completed, failed or cancelled and return it (it does not raise on a
        failed job: check ``status``). The interval grows 1.5x per poll from ``poll_interval`` up to
        ``max_poll_interval``; past ``timeout`` seconds :class:`WaitTimeout` is raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        video = None
        while True:
            video = self.get(video_id)
            if video.done:
                return video
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(video_id, timeout, video)
                time.sleep(min(interval, remaining))
            else:
                time.sleep(interval)
            interval = min(interval * 1.5, max(max_poll_interval, poll_interval))

    def events(self, video_id: str) -> Iterator[Event]:
        """The job's Server-Sent Events as typed :class:`Event` s, ending after the terminal one.

        A dropped connection is re-opened (up to ``max_retries`` times); the server replays the job's
        events and the ones already yielded are skipped."""
        replay = EventReplay()
        reconnects = 0
        while True:
            response = self._open_stream(f"/v1/videos/{video_id}/events")
            replay.restart()
            try:
                for event in SSEDecoder().decode(response.iter_lines()):
                    if replay.accept(event):
                        yield event
                    if replay.done:
                        return
            except httpx.TransportError as exc:
                if reconnects >= self._settings.max_retries:
                    raise connection_error(exc, f"GET /v1/videos/{video_id}/events") from exc
            finally:
                response.close()
            if reconnects >= self._settings.max_retries:
                raise APIConnectionError(f"event stream of {video_id} ended before a terminal event")
            self._sleep_before_retry(reconnects, None)
            reconnects += 1

    def download(self, video_id: str, path: str | Path, *, variant: str = "video") -> Path:
        """Stream the video (``.mp4``) or thumbnail (``.webp``) to ``path`` (a file, or a directory to
        write ``<id>.mp4`` / ``<id>.webp`` in). The file appears atomically, complete or not at all."""
        target = download_target(path, video_id, variant)
        tmp = temp_path(target)
        response = self._open_stream(f"/v1/videos/{video_id}/content", params={"variant": variant})
        try:
            with open(tmp, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
            os.replace(tmp, target)
        except httpx.TransportError as exc:
            raise connection_error(exc, f"GET /v1/videos/{video_id}/content") from exc
        finally:
            response.close()
            tmp.unlink(missing_ok=True)
        return target

    def generate(self, prompt: str, *, output: str | Path = ".", variant: str = "video",
                 timeout: float | None = 600.0, poll_interval: float = 0.2, **create_kwargs: Any) -> GeneratedVideo:
        """``create`` + ``wait`` + ``download``: the completed job with ``path`` set to the written file.

        Raises :class:`VideoFailedError` when the job fails or is cancelled, :class:`WaitTimeout` past
        ``timeout``. ``create_kwargs`` are :meth:`create`'s keyword arguments."""
        video = self.create(prompt, **create_kwargs)
        video = self.wait(video.id, timeout=timeout, poll_interval=poll_interval)
        if video.status != "completed":
            raise VideoFailedError(video)
        path = self.download(video.id, output, variant=variant)
        return GeneratedVideo.model_validate({**video.model_dump(), "path": path})

    # -- server -----------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        return ModelList.model_validate(self._request("GET", "/v1/models").json()).data

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def ready(self) -> dict[str, Any]:
        """``{"ready": bool, "queued": int}`` (a not-ready server answers 503; this does not raise)."""
        return self._request("GET", "/ready", raise_errors=False).json()

    def metrics(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        return self._request("GET", "/metrics").text

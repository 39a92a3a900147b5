"""``/v1/videos``: queue a job, list, read, cancel or delete it, fetch its video or thumbnail, follow
its events over SSE.

Handlers never touch tensors: they validate, write the job row and wake the engine's worker; the
engine publishes what happens next, and the routes read it back from the store and the event bus.
A job of another tenant answers exactly as a missing one.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from server.api.dependencies import RequestCaller, Runtime
from server.api.request_body import read_body
from server.video_object import video_object
from server.errors import APIError
from server.runtime import ServerRuntime
from server.schema import VideoDeleted, VideoList, VideoObject
from server.store import ACTIVE, CANCELLED, COMPLETED, IN_PROGRESS, Job
from server.tenancy import Caller

#: Seconds between SSE comments on a quiet stream; each also re-reads the row for a lost outcome.
SSE_PING_S = 15.0

router = APIRouter(tags=["videos"])


class VideoFileResponse(FileResponse):
    """A FileResponse whose Range errors (Starlette answers them in plain text) use the error shape."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise APIError(400, f"Range: {exc.content}", param="Range", code="invalid_range") from None
        except RangeNotSatisfiable as exc:
            raise APIError(416, f"Range: not satisfiable for a file of {exc.max_size} bytes", param="Range",
                           code="range_not_satisfiable",
                           headers={"Content-Range": f"bytes */{exc.max_size}"}) from None


def _job_or_404(runtime: ServerRuntime, video_id: str, caller: Caller) -> Job:
    """The job, if ``caller`` may see it; another tenant's answers exactly as a missing one."""
    job = runtime.store.get(video_id)
    if job is None or not caller.may_see(job):
        raise APIError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
    return job


@router.post("/v1/videos", response_model=VideoObject,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/VideoCreateRequest"}},
                 "multipart/form-data": {"schema": {"$ref": "#/components/schemas/VideoCreateRequest"}}}}})
async def create_video(request: Request, runtime: Runtime, caller: RequestCaller) -> JSONResponse:
    """Queue a video job. Extension fields (reward_guidance, checkpoint, ...) ride in extra_body."""
    lifecycle, engine, store, config = runtime.lifecycle, runtime.engine, runtime.store, runtime.config
    if lifecycle.failure or engine.failure:
        raise APIError(503, f"server failed: {lifecycle.failure or engine.failure}", code="unavailable",
                       headers={"Retry-After": "5"})
    if lifecycle.draining or not runtime.accepting or not engine.alive:
        raise APIError(503, "server is shutting down", code="unavailable", headers={"Retry-After": "5"})
    body = await read_body(request, config.limits.max_body_bytes)
    # Off the event loop: an input video's frames are decoded to check them.
    spec, inputs = await run_in_threadpool(runtime.resolver.resolve_with_inputs, body)
    if store.count_active() >= config.max_queue:
        runtime.metrics.requests.labels(status="rejected").inc()
        raise APIError(429, f"queue is full (max_queue {config.max_queue}); retry later",
                       code="queue_full", headers={"Retry-After": "2"})
    job = store.create(spec, owner=caller.owner, inputs=inputs)
    runtime.events.publish(job.id, "queued")
    engine.wake()
    return JSONResponse(video_object(job, runtime.retention))


@router.get("/v1/videos", response_model=VideoList)
async def list_videos(runtime: Runtime, caller: RequestCaller, after: str | None = Query(None, max_length=64),
                      limit: int = Query(20, ge=1, le=100),
                      order: str = Query("desc", pattern="^(asc|desc)$")) -> dict[str, Any]:
    try:
        jobs, has_more = runtime.store.list(after, limit, order, owner=caller.scope)
    except KeyError:
        raise APIError(400, f"after: no video with id {after!r}", param="after") from None
    data = [video_object(j, runtime.retention) for j in jobs]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.get("/v1/videos/{video_id}", response_model=VideoObject)
async def get_video(video_id: str, runtime: Runtime, caller: RequestCaller) -> dict[str, Any]:
    return video_object(_job_or_404(runtime, video_id, caller), runtime.retention)


@router.delete("/v1/videos/{video_id}", response_model=VideoObject | VideoDeleted)
async def delete_video(video_id: str, runtime: Runtime, caller: RequestCaller) -> dict[str, Any]:
    """Cancel a queued or running job (it leaves its batch at the next step); delete a finished one."""
    job = _job_or_404(runtime, video_id, caller)
    store, engine = runtime.store, runtime.engine
    if job.status in ACTIVE:
        engine.cancel(video_id)
        if store.finish(video_id, CANCELLED, error=("cancelled", "cancelled by the client")):
            runtime.metrics.requests.labels(status=CANCELLED).inc()
            runtime.events.publish(video_id, CANCELLED,
                                   error={"code": "cancelled", "message": "cancelled by the client"})
        engine.wake()
        return video_object(_job_or_404(runtime, video_id, caller), runtime.retention)
    store.delete(video_id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/v1/videos/{video_id}/content", responses={200: {"content": {"video/mp4": {}, "image/webp": {}}}})
async def video_content(video_id: str, runtime: Runtime, caller: RequestCaller,
                        variant: str = Query("video", pattern="^(video|thumbnail)$")):
    job = _job_or_404(runtime, video_id, caller)
    retention, store = runtime.retention, runtime.store
    if job.status != COMPLETED:
        raise APIError(409, f"video {video_id} is {job.status}, not completed", code="video_not_ready")
    if retention.expired(job):
        raise APIError(410, f"video {video_id} expired at {int(retention.expires_at(job))} (retention "
                       f"{runtime.config.retention_days:g} days); its files are deleted", code="video_expired")
    path = store.video_path(video_id) if variant == "video" else store.thumbnail_path(video_id)
    try:
        stat = os.stat(path)  # handed to FileResponse, which then never stats a vanished file
    except FileNotFoundError:
        raise APIError(410, f"the {variant} file of completed video {video_id} is gone from the server "
                       "(deleted meanwhile, or removed from the data directory)", param="video_id",
                       code="video_file_missing") from None
    media_type = "video/mp4" if variant == "video" else "image/webp"
    return VideoFileResponse(path, media_type=media_type, filename=path.name, stat_result=stat)


@router.get("/v1/videos/{video_id}/events", responses={200: {"content": {"text/event-stream": {}}}})
async def video_events(video_id: str, request: Request, runtime: Runtime, caller: RequestCaller) -> StreamingResponse:
    """Server-Sent Events: queued, started, one ``step`` per step (t, per-objective rewards), and
    completed / failed / cancelled, after which the stream ends."""
    job = _job_or_404(runtime, video_id, caller)
    return StreamingResponse(_event_stream(runtime, request, job), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _outcome(finished: Job) -> str:
    """The terminal event of a finished job, from its row."""
    payload = {"id": finished.id, **({"error": {"code": finished.error_code, "message": finished.error_message}}
                                     if finished.error_code else finished.result)}
    return _sse(finished.status, payload)


async def _event_stream(runtime: ServerRuntime, request: Request, job: Job) -> AsyncIterator[str]:
    """The job's events to its terminal one: those this process heard already, then the live ones."""
    store, video_id = runtime.store, job.id
    past, queue = runtime.bus.subscribe(video_id)
    try:
        if not past:
            # Nothing heard here of this job: the row (read after subscribing) is the truth.
            current = store.get(video_id) or job
            if current.status not in ACTIVE:  # finished in an earlier process, or elsewhere
                yield _outcome(current)
                return
            if current.status == IN_PROGRESS:  # running on a worker since before this process heard of it
                yield _sse("started", {"id": video_id, "progress": current.progress})
        for event in past:
            yield _sse(event.kind, event.data)
            if event.terminal:
                return
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(queue.get(), timeout=SSE_PING_S)
            except TimeoutError:
                current = store.get(video_id)  # an outcome whose event was lost (a dropped LISTEN)
                if current is not None and current.status not in ACTIVE:
                    yield _outcome(current)
                    return
                yield ": ping\n\n"
                continue
            yield _sse(event.kind, event.data)
            if event.terminal:
                return
    finally:
        runtime.bus.unsubscribe(video_id, queue)

"""The HTTP API: OpenAI-style video jobs with per-request reward guidance.

Handlers never touch tensors: they validate, write the job row, and wake the engine's worker. Bodies
are accepted as JSON and as form data (the official ``openai`` SDK sends ``videos.create`` as
multipart, nesting ``extra_body`` fields as ``reward_guidance[weights][vq]``). Every error is an
OpenAI-shaped ``{"error": {"message", "type", "param", "code"}}`` (``server.errors``) with a 4xx
status naming the field and the limit; the layers in front of the routes (``server.middleware``)
check Host, Origin, key and body size, and make even a bug answer with JSON and ``Connection: close``
rather than a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from guidance.nrg import defaults_for
from server import access_log, playground
from server.config import ServerConfig, memory_budget
from server.engine import Engine
from server.hosted_model import HostedModel
from server.judging import HeldOutJudges, load_judges
from server.errors import APIError, install_error_handlers
from server.events import EventBus
from server.lifecycle import Lifecycle
from server.job_log import JobLog
from server.json_body import MAX_DEPTH, JSONBodyError, parse_json_object
from server.metrics import Metrics
from server.middleware import BearerAuth, BodyLimit, HostCheck, OriginCheck, ResponseGuard
from server.openapi_doc import document
from server.origin_policy import HostPolicy
from server.request_resolver import RequestResolver
from server.retention import Retention
from server.schema import ModelList, VideoDeleted, VideoList, VideoObject
from server.roles import FrontEndOnly
from server.store import ACTIVE, CANCELLED, COMPLETED, IN_PROGRESS, LOCAL_WORKER, Job, StoreError, open_store
from server.tenancy import Caller, KeyRing
from server.webhooks.deliverer import WebhookDeliverer

log = logging.getLogger("nrg.server")
SSE_PING_S = 15.0


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


def _unflatten_form(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``a[b][c]=v`` / ``a[b][]=v`` form keys (as the openai SDK writes them) to nested dicts/lists."""
    out: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(value, str):
            raise APIError(400, f"{key}: file uploads are not supported", param=key)
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        if len(parts) > MAX_DEPTH:
            raise APIError(400, f"{key[:100]}: form key nesting exceeds the limit of {MAX_DEPTH} levels",
                           param=parts[0])
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                raise APIError(400, f"{key}: malformed form key", param=key)
            if not last and parts[i + 1] == "[]":
                node.setdefault(part, []).append(value)
                break
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise APIError(400, f"{key}: conflicting form keys", param=key)
                node = child
    return out


def _video_fields(job: Job, expires_at: float | None) -> dict[str, Any]:
    spec, r = job.spec, job.result
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    checkpoint = spec.checkpoint
    return VideoObject(
        id=job.id, model=spec.model, status=job.status, progress=job.progress, created_at=int(job.created_at),
        completed_at=int(job.completed_at) if job.completed_at else None,
        expires_at=int(expires_at) if expires_at is not None else None, prompt=spec.prompt,
        size=f"{spec.width}x{spec.height}", seconds=spec.seconds, error=error,
        negative_prompt=spec.negative_prompt, width=spec.width, height=spec.height, num_frames=spec.num_frames,
        fps=spec.fps, seed=spec.seed, num_inference_steps=spec.num_inference_steps,
        guidance_scale=spec.guidance_scale, checkpoint=checkpoint.name if checkpoint else None,
        checkpoint_scale=checkpoint.scale if checkpoint is not None and checkpoint.per_row else None,
        reward_guidance=spec.reward_guidance_json(),
        **{k: r.get(k) for k in ("rewards", "rewards_z", "judge_scores", "guidance_skipped_steps", "cost_vs_unguided",
                                 "batch_size", "queue_time_s", "inference_time_s", "encode_time_s", "peak_memory_mb")},
        webhook_status=job.webhook,
    ).model_dump(mode="json")


def create_app(config: ServerConfig, models: dict[str, HostedModel]) -> FastAPI:
    """The app over already loaded ``models`` (see ``server.config.load_models``)."""
    if not models:
        raise ValueError("at least one model must be hosted")
    limits = config.limits
    store = open_store(config.store_url, config.data_dir, allow_empty=config.allow_empty_store)
    if config.role != "all" and not store.shared:
        store.close()
        raise ValueError(f"--role {config.role} needs a store the processes share: --store postgresql://...")
    job_log = JobLog(store)
    listener = lease = None
    if store.shared:  # events go out with NOTIFY; this process's SSE subscribers read what it LISTENs to
        from server.pg_events import EventListener, NotifyingEvents

        bus = EventBus()
        events = NotifyingEvents(store, listeners=(job_log,))
        listener = EventListener(store, bus) if config.role != "worker" else None
    else:
        bus = events = EventBus(listeners=(job_log,))
    lifecycle = Lifecycle(config.shutdown_grace_s)
    worker_id = config.worker_id or (f"{socket.gethostname()}-{os.getpid()}" if store.shared else LOCAL_WORKER)
    metrics = Metrics(worker_id)
    metrics.worker_info.labels(role=config.role, worker=worker_id).set(1)
    judge_objectives: dict[str, tuple[str, ...]] = {}
    if config.role == "api":
        engine = FrontEndOnly(models)
    else:
        judges = HeldOutJudges(load_judges(config.judges, str(next(iter(models.values())).family.device)))
        judge_objectives = {name: named.objectives for name, named in judges.judges.items()}
        engine = Engine(models, store, events, metrics, config.max_batch, config.batch_wait_ms, config.batching,
                        fault_backoff_s=config.fault_backoff_s, on_fatal=lifecycle.fail, worker_id=worker_id,
                        lease_s=config.lease_s, memory_budget=memory_budget(config), judges=judges,
                        batch_invariant=config.batch_invariant)
        if store.shared:
            from server.worker_lease import LeaseKeeper

            lease = LeaseKeeper(store, engine, worker_id, config.lease_s)
    retention = Retention(store, config.retention_days)
    webhooks = WebhookDeliverer(config.webhooks, store, metrics, worker_id,
                                render=lambda job: _video_fields(job, retention.expires_at(job)))
    resolver = RequestResolver(models, limits, list(config.judges), judge_objectives, webhooks.policy)
    state = {"accepting": True}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if listener is not None:
            await asyncio.to_thread(listener.start)
        engine.start()
        if lease is not None:
            lease.start()
        retention.start()
        webhooks.start()
        yield
        state["accepting"] = False
        finished = await asyncio.to_thread(engine.stop, lifecycle.remaining_grace())
        await asyncio.to_thread(retention.stop)
        await asyncio.to_thread(webhooks.stop)
        for thread in (lease, listener):
            if thread is not None:
                await asyncio.to_thread(thread.stop)
        if finished:
            store.close()
        else:  # the worker may still write; the file is crash-safe, so leave it open to the exit
            log.warning("shutdown grace elapsed; the running jobs go back to the queue (with a shared store at "
                        "once, else at the next start)")

    app = FastAPI(title="nrg-serve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-style video jobs, steered per request by Flow-NRG reward guidance.")
    app.state.engine, app.state.store, app.state.metrics, app.state.retention = engine, store, metrics, retention
    app.state.lifecycle = lifecycle
    app.state.role, app.state.worker_id = config.role, worker_id
    install_error_handlers(app)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return APIError(503, f"the job store is unavailable: {exc}", code="store_unavailable",
                        headers={"Retry-After": "5"}).response()

    # add_middleware wraps: the last added is the outermost (see server.middleware for the order).
    app.add_middleware(BodyLimit, max_body_bytes=limits.max_body_bytes)
    keys = KeyRing(config.api_keys, [config.admin_key] if config.admin_key else [])
    app.add_middleware(BearerAuth, keys=keys)
    app.add_middleware(playground.PageSecurityHeaders)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])
    app.add_middleware(OriginCheck, cors_origins=tuple(config.cors_origins))
    app.add_middleware(HostCheck, policy=HostPolicy(config.host, config.allowed_hosts))
    app.add_middleware(ResponseGuard)
    access_log.install()

    def _video_object(job: Job) -> dict[str, Any]:
        return _video_fields(job, retention.expires_at(job))

    def _caller(request: Request) -> Caller:
        return request.state.caller  # set by BearerAuth on every non-public route

    def _job_or_404(video_id: str, caller: Caller) -> Job:
        """The job, if ``caller`` may see it; another tenant's answers exactly as a missing one."""
        job = store.get(video_id)
        if job is None or not caller.may_see(job):
            raise APIError(404, f"no video with id {video_id!r}", param="video_id", code="not_found")
        return job

    async def _read_body(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        raw = await request.body()  # BodyLimit stops it at max_body_bytes
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            try:
                form = await request.form(max_files=0)
            except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed body
                raise APIError(400, f"malformed form body: {exc}") from None
            return _unflatten_form(form.multi_items())
        try:
            return parse_json_object(raw)
        except JSONBodyError as exc:
            raise APIError(400, str(exc), param=exc.param) from None

    @app.post("/v1/videos", response_model=VideoObject, tags=["videos"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/VideoCreateRequest"}},
                  "multipart/form-data": {"schema": {"$ref": "#/components/schemas/VideoCreateRequest"}}}}})
    async def create_video(request: Request) -> JSONResponse:
        """Queue a video job. Extension fields (reward_guidance, checkpoint, ...) ride in extra_body."""
        if lifecycle.failure or engine.failure:
            raise APIError(503, f"server failed: {lifecycle.failure or engine.failure}", code="unavailable",
                           headers={"Retry-After": "5"})
        if lifecycle.draining or not state["accepting"] or not engine.alive:
            raise APIError(503, "server is shutting down", code="unavailable", headers={"Retry-After": "5"})
        spec = resolver.resolve(await _read_body(request))
        if store.count_active() >= config.max_queue:
            metrics.requests.labels(status="rejected").inc()
            raise APIError(429, f"queue is full (max_queue {config.max_queue}); retry later",
                           code="queue_full", headers={"Retry-After": "2"})
        job = store.create(spec, owner=_caller(request).owner)
        events.publish(job.id, "queued")
        engine.wake()
        return JSONResponse(_video_object(job))

    @app.get("/v1/videos", response_model=VideoList, tags=["videos"])
    async def list_videos(request: Request, after: str | None = Query(None, max_length=64),
                          limit: int = Query(20, ge=1, le=100),
                          order: str = Query("desc", pattern="^(asc|desc)$")) -> dict[str, Any]:
        try:
            jobs, has_more = store.list(after, limit, order, owner=_caller(request).scope)
        except KeyError:
            raise APIError(400, f"after: no video with id {after!r}", param="after") from None
        data = [_video_object(j) for j in jobs]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": has_more}

    @app.get("/v1/videos/{video_id}", response_model=VideoObject, tags=["videos"])
    async def get_video(video_id: str, request: Request) -> dict[str, Any]:
        return _video_object(_job_or_404(video_id, _caller(request)))

    @app.delete("/v1/videos/{video_id}", response_model=VideoObject | VideoDeleted, tags=["videos"])
    async def delete_video(video_id: str, request: Request) -> dict[str, Any]:
        """Cancel a queued or running job (it leaves its batch at the next step); delete a finished one."""
        caller = _caller(request)
        job = _job_or_404(video_id, caller)
        if job.status in ACTIVE:
            engine.cancel(video_id)
            if store.finish(video_id, CANCELLED, error=("cancelled", "cancelled by the client")):
                metrics.requests.labels(status=CANCELLED).inc()
                events.publish(video_id, CANCELLED, error={"code": "cancelled", "message": "cancelled by the client"})
            engine.wake()
            return _video_object(_job_or_404(video_id, caller))
        store.delete(video_id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    @app.get("/v1/videos/{video_id}/content", tags=["videos"],
             responses={200: {"content": {"video/mp4": {}, "image/webp": {}}}})
    async def video_content(video_id: str, request: Request,
                            variant: str = Query("video", pattern="^(video|thumbnail)$")):
        job = _job_or_404(video_id, _caller(request))
        if job.status != COMPLETED:
            raise APIError(409, f"video {video_id} is {job.status}, not completed", code="video_not_ready")
        if retention.expired(job):
            raise APIError(410, f"video {video_id} expired at {int(retention.expires_at(job))} (retention "
                           f"{config.retention_days:g} days); its files are deleted", code="video_expired")
        path = store.video_path(video_id) if variant == "video" else store.thumbnail_path(video_id)
        try:
            stat = os.stat(path)  # handed to FileResponse, which then never stats a vanished file
        except FileNotFoundError:
            raise APIError(410, f"the {variant} file of completed video {video_id} is gone from the server "
                           "(deleted meanwhile, or removed from the data directory)", param="video_id",
                           code="video_file_missing") from None
        media_type = "video/mp4" if variant == "video" else "image/webp"
        return VideoFileResponse(path, media_type=media_type, filename=path.name, stat_result=stat)

    @app.get("/v1/videos/{video_id}/events", tags=["videos"], responses={200: {"content": {"text/event-stream": {}}}})
    async def video_events(video_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: queued, started, one ``step`` per step (t, per-objective rewards), and
        completed / failed / cancelled, after which the stream ends."""
        job = _job_or_404(video_id, _caller(request))

        def outcome(finished: Job) -> str:
            payload = {"id": video_id, **({"error": {"code": finished.error_code, "message": finished.error_message}}
                                          if finished.error_code else finished.result)}
            return f"event: {finished.status}\ndata: {json.dumps(payload)}\n\n"

        async def stream() -> AsyncIterator[str]:
            past, queue = bus.subscribe(video_id)
            try:
                if not past:
                    # Nothing heard here of this job: the row (read after subscribing) is the truth.
                    current = store.get(video_id) or job
                    if current.status not in ACTIVE:  # finished in an earlier process, or elsewhere
                        yield outcome(current)
                        return
                    if current.status == IN_PROGRESS:  # running on a worker since before this process heard of it
                        yield f"event: started\ndata: {json.dumps({'id': video_id, 'progress': current.progress})}\n\n"
                for event in past:
                    yield f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n"
                    if event.terminal:
                        return
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=SSE_PING_S)
                    except TimeoutError:
                        current = store.get(video_id)  # an outcome whose event was lost (a dropped LISTEN)
                        if current is not None and current.status not in ACTIVE:
                            yield outcome(current)
                            return
                        yield ": ping\n\n"
                        continue
                    yield f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n"
                    if event.terminal:
                        return
            finally:
                bus.unsubscribe(video_id, queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models() -> dict[str, Any]:
        data = []
        for name, hosted in models.items():
            shape = hosted.default_shape
            data.append({
                "id": name, "object": "model", "family": hosted.family.name,
                "reward_objectives": list(hosted.reward.objectives) if hosted.reward else [],
                "checkpoints": hosted.checkpoints.describe() if hosted.checkpoints else [],
                "defaults": {"width": shape.width, "height": shape.height, "num_frames": shape.frames,
                             "num_inference_steps": hosted.default_steps,
                             "guidance_scale": hosted.family.default_cfg},
                "reward_guidance_defaults": defaults_for(hosted.reward).to_json() if hosted.reward else None,
            })
        return {"object": "list", "data": data}

    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        """Liveness: 503 only when this process cannot go on (worker dead, store corrupt); restart it."""
        reason = lifecycle.failure or engine.failure or (store.problem if store.corrupt else None)
        if reason is not None:
            return JSONResponse({"status": "failed", "reason": reason}, status_code=503)
        return JSONResponse({"status": "draining" if lifecycle.draining else "ok"})

    @app.get("/ready", tags=["ops"])
    async def ready() -> JSONResponse:
        """Readiness: 200 only while new jobs would be accepted and the store serves."""
        reason = None
        queued = None
        try:
            queued = store.count_queued()
        except StoreError as exc:
            reason = str(exc)
        if lifecycle.draining or not state["accepting"]:
            reason = "shutting down"
        elif not engine.alive:
            reason = engine.failure or lifecycle.failure or "the worker is not running"
        elif store.problem is not None:
            reason = store.problem
        if reason is None:
            return JSONResponse({"ready": True, "queued": queued})
        return JSONResponse({"ready": False, "queued": queued, "reason": reason}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.get("/metrics", tags=["ops"])
    async def prometheus() -> Response:
        try:
            metrics.queue_depth.set(store.count_queued())
            metrics.store_up.set(1)
        except StoreError:
            metrics.queue_depth.set(float("nan"))
            metrics.store_up.set(0)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = resolver.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["VideoCreateRequest"] = body
            app.openapi_schema = document(schema, auth=keys.enabled)
        return app.openapi_schema

    app.openapi = openapi
    playground.install(app)
    if config.role == "worker":  # jobs are submitted to and read from the API processes
        app.router.routes[:] = [r for r in app.router.routes
                                if not getattr(r, "path", "").startswith("/v1/videos")]
    return app

"""What probes and monitoring read: ``/health`` (liveness), ``/ready`` (readiness), ``/metrics`` (Prometheus).

Every role serves them; in an API process the engine is its stand-in (``server.roles.FrontEndOnly``),
always alive, so readiness there is the store's and the lifecycle's.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.api.dependencies import Runtime
from server.store import StoreError

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(runtime: Runtime) -> JSONResponse:
    """Liveness: 503 only when this process cannot go on (worker dead, store corrupt); restart it."""
    lifecycle, store = runtime.lifecycle, runtime.store
    reason = lifecycle.failure or runtime.engine.failure or (store.problem if store.corrupt else None)
    if reason is not None:
        return JSONResponse({"status": "failed", "reason": reason}, status_code=503)
    return JSONResponse({"status": "draining" if lifecycle.draining else "ok"})


@router.get("/ready")
async def ready(runtime: Runtime) -> JSONResponse:
    """Readiness: 200 only while new jobs would be accepted and the store serves."""
    lifecycle, engine, store = runtime.lifecycle, runtime.engine, runtime.store
    reason = None
    queued = None
    try:
        queued = store.count_queued()
    except StoreError as exc:
        reason = str(exc)
    if lifecycle.draining or not runtime.accepting:
        reason = "shutting down"
    elif not engine.alive:
        reason = engine.failure or lifecycle.failure or "the worker is not running"
    elif store.problem is not None:
        reason = store.problem
    if reason is None:
        return JSONResponse({"ready": True, "queued": queued})
    return JSONResponse({"ready": False, "queued": queued, "reason": reason}, status_code=503,
                        headers={"Retry-After": "5"})


@router.get("/metrics")
async def prometheus(runtime: Runtime) -> Response:
    metrics, store = runtime.metrics, runtime.store
    try:
        metrics.queue_depth.set(store.count_queued())
        metrics.store_up.set(1)
    except StoreError:
        metrics.queue_depth.set(float("nan"))
        metrics.store_up.set(0)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")

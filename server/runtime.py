"""What one server process runs, built for its ``--role`` (``server.roles``): the store, the engine
(or its stand-in in an API process), the event channels, the background threads, the lifecycle.

:func:`build_runtime` wires them once; the app (``server.app``) holds the result on ``app.state`` and
its lifespan starts and stops it; the routes (``server.api``) read it through one typed dependency
instead of closing over a dozen variables. What differs per role is decided here and nowhere else:

* ``all``: the engine, and the events a local bus carries to SSE (or, over a shared store, NOTIFY
  and this process's LISTEN);
* ``api``: no engine (``FrontEndOnly``) and no judges loaded; events come from the workers over LISTEN;
* ``worker``: the engine with its lease keeper; it publishes events but serves no SSE, so no LISTEN.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from guidance.precision import resolve_device
from server.video_object import video_object
from server.config import ServerConfig
from server.engine import Engine
from server.events import EventBus, EventSink
from server.hosted_model import HostedModel
from server.job_log import JobLog
from server.judging import HeldOutJudges, load_judges
from server.lifecycle import Lifecycle
from server.metrics import Metrics
from server.request_resolver import RequestResolver
from server.retention import Retention
from server.roles import FrontEndOnly, runs_engine, serves_jobs
from server.store import LOCAL_WORKER, Store, open_store
from server.webhooks.deliverer import WebhookDeliverer

if TYPE_CHECKING:  # PostgreSQL's pieces load only with a shared store (psycopg is optional)
    from server.pg_events import EventListener
    from server.worker_lease import LeaseKeeper

log = logging.getLogger("nrg.server")

#: Share of a GPU's memory the automatic budget leaves to batches (the rest: allocator slack, CUDA context).
AUTO_BUDGET_SHARE = 0.9


@dataclass
class ServerRuntime:
    """Everything the routes and the app's lifespan use, owned by one process."""

    config: ServerConfig
    models: dict[str, HostedModel]
    store: Store
    #: Where this process publishes job events: the bus itself, or NOTIFY over a shared store.
    events: EventSink
    #: What this process's SSE subscribers read.
    bus: EventBus
    engine: Engine | FrontEndOnly
    lifecycle: Lifecycle
    metrics: Metrics
    retention: Retention
    resolver: RequestResolver
    #: Delivers the webhooks of finished jobs from the store (``server.webhooks``).
    webhooks: WebhookDeliverer
    #: This process's name in the store (the rows its engine claims) and in its metrics.
    worker_id: str
    #: A worker's heartbeats over a shared store; None otherwise.
    lease: LeaseKeeper | None = None
    #: A front end's LISTEN feeding ``bus`` from a shared store; None otherwise.
    listener: EventListener | None = None
    #: Cleared when shutdown begins: from then on new jobs get 503 while the running batch finishes.
    accepting: bool = True

    async def start(self) -> None:
        """Start the background threads: LISTEN first, so that no event of a job started meanwhile is missed."""
        if self.listener is not None:
            await asyncio.to_thread(self.listener.start)
        self.engine.start()
        if self.lease is not None:
            self.lease.start()
        self.retention.start()
        self.webhooks.start()

    async def stop(self) -> None:
        """Stop taking jobs, give the running batch the lifecycle's remaining grace, stop the threads."""
        self.accepting = False
        finished = await asyncio.to_thread(self.engine.stop, self.lifecycle.remaining_grace())
        await asyncio.to_thread(self.retention.stop)
        await asyncio.to_thread(self.webhooks.stop)
        for thread in (self.lease, self.listener):
            if thread is not None:
                await asyncio.to_thread(thread.stop)
        if finished:
            self.store.close()
        else:  # the worker may still write; the file is crash-safe, so leave it open to the exit
            log.warning("shutdown grace elapsed; the running jobs go back to the queue (with a shared store at "
                        "once, else at the next start)")


def build_runtime(config: ServerConfig, models: dict[str, HostedModel]) -> ServerRuntime:
    """The runtime of a ``config.role`` process over already loaded ``models``."""
    if not models:
        raise ValueError("at least one model must be hosted")
    store = open_store(config.store_url, config.data_dir, allow_empty=config.allow_empty_store)
    if config.role != "all" and not store.shared:
        store.close()
        raise ValueError(f"--role {config.role} needs a store the processes share: --store postgresql://...")
    worker_id = config.worker_id or (f"{socket.gethostname()}-{os.getpid()}" if store.shared else LOCAL_WORKER)
    metrics = Metrics(worker_id)
    metrics.worker_info.labels(role=config.role, worker=worker_id).set(1)
    job_log = JobLog(store)
    listener = None
    if store.shared:  # events go out with NOTIFY; this process's SSE subscribers read what it LISTENs to
        from server.pg_events import EventListener, NotifyingEvents

        bus = EventBus()
        events: EventSink = NotifyingEvents(store, listeners=(job_log,))
        listener = EventListener(store, bus) if serves_jobs(config.role) else None
    else:
        bus = EventBus(listeners=(job_log,))
        events = bus
    lifecycle = Lifecycle(config.shutdown_grace_s)
    engine: Engine | FrontEndOnly = FrontEndOnly(models)
    judge_objectives: dict[str, tuple[str, ...]] = {}
    judge_differentiable: dict[str, frozenset[str]] = {}
    lease = None
    if runs_engine(config.role):
        if config.compile_backend is not None:
            from guidance.compilation import compile_monitor

            metrics.track_compiles(compile_monitor().counts)
        judges = HeldOutJudges(load_judges(config.judges, str(next(iter(models.values())).family.device)))
        judge_objectives = {name: named.objectives for name, named in judges.judges.items()}
        judge_differentiable = {name: named.differentiable for name, named in judges.judges.items()}
        engine = Engine(models, store, events, metrics, config.max_batch, config.batch_wait_ms, config.batching,
                        fault_backoff_s=config.fault_backoff_s, on_fatal=lifecycle.fail, worker_id=worker_id,
                        lease_s=config.lease_s, memory_budget=memory_budget(config), judges=judges,
                        batch_invariant=config.batch_invariant, max_step_slowdown=config.max_step_slowdown)
        if store.shared:
            from server.worker_lease import LeaseKeeper

            lease = LeaseKeeper(store, engine, worker_id, config.lease_s)
    retention = Retention(store, config.retention_days)
    webhooks = WebhookDeliverer(config.webhooks, store, metrics, worker_id,
                                render=lambda job: video_object(job, retention))
    return ServerRuntime(
        config=config, models=models, store=store, events=events, bus=bus, engine=engine, lifecycle=lifecycle,
        metrics=metrics, retention=retention,
        resolver=RequestResolver(models, config.limits, list(config.judges), judge_objectives, judge_differentiable,
                                 webhooks.policy),
        webhooks=webhooks, worker_id=worker_id, lease=lease, listener=listener,
    )


def memory_budget(config: ServerConfig) -> int | None:
    """The engine's memory budget in bytes (None: no limit); see ``ServerConfig.memory_budget_gib``."""
    if config.memory_budget_gib is not None:
        return int(config.memory_budget_gib * 2**30) or None
    device = resolve_device(config.device)
    if device.type != "cuda":
        return None
    return int(AUTO_BUDGET_SHARE * torch.cuda.get_device_properties(device).total_memory)

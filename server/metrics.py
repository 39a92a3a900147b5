"""Prometheus metrics of the serving process (``GET /metrics``).

Each app gets its own registry, so several servers (tests) can live in one process.

What this process's engine measures (batches, steps, rewards, its jobs' waits) carries a ``worker``
label, the process's ``--worker-id`` (``local`` for a single-process server): in a scaled-out
deployment every worker is scraped on its own, and the label names the worker in the store's rows
(``jobs.worker``), so a dashboard can show each worker and sum over them. ``nrg_queue_depth`` is the
store's queue, the same on every process that shares it, and ``nrg_requests`` counts outcomes where
they were decided (a worker: completed, failed; a front end: cancelled, rejected).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from server.store import LOCAL_WORKER

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, worker: str = LOCAL_WORKER) -> None:
        self.worker = worker
        self.registry = CollectorRegistry()
        r = self.registry
        # The per-worker series exist (at zero) from the start, so a worker that has run nothing yet is
        # still on the dashboard; the engine observes the children bound to this process's worker.
        by_worker = ["worker"]
        self.requests = Counter("nrg_requests", "Video jobs by final or rejected status", ["status"], registry=r)
        self.queue_depth = Gauge("nrg_queue_depth", "Jobs waiting in the store's queue (NaN while the store "
                                 "does not answer)", registry=r)
        #: A store outage must not cost the scrape: every other series is what an operator needs then.
        self.store_up = Gauge("nrg_store_up", "1 if the job store answered this scrape's queue-depth read, else 0",
                              registry=r)
        self.batch_size = Histogram("nrg_batch_size", "Samples sharing each denoising step (the achieved batch size)",
                                    by_worker, buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=r).labels(worker=worker)
        self.step_time = Histogram("nrg_step_seconds", "Wall time of one denoising step of a batch", by_worker,
                                   buckets=STEP_BUCKETS, registry=r).labels(worker=worker)
        self.queue_wait = Histogram("nrg_queue_wait_seconds", "Time from creation to start", by_worker,
                                    buckets=LATENCY_BUCKETS, registry=r).labels(worker=worker)
        self.latency = Histogram("nrg_e2e_latency_seconds", "Time from creation to completion", by_worker,
                                 buckets=LATENCY_BUCKETS, registry=r).labels(worker=worker)
        self.guidance_share = Histogram(
            "nrg_guidance_time_share", "Share of a batch's denoising time spent on reward guidance", by_worker,
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), registry=r,
        ).labels(worker=worker)
        self._final_reward = Histogram("nrg_final_reward", "Reward of the final latents per objective",
                                       ["worker", "objective"], buckets=(-10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10),
                                       registry=r)
        self.skipped_steps = Counter("nrg_guidance_skipped_steps",
                                     "Guided steps skipped for a non-finite reward gradient", by_worker,
                                     registry=r).labels(worker=worker)
        self.joins_held_by_cost = Counter(
            "nrg_joins_held_by_step_cost", "Admissions that kept a queued job out of the running batch because its "
            "predicted step time would exceed --max-step-slowdown", by_worker, registry=r).labels(worker=worker)
        self.device_memory = Gauge("nrg_device_memory_bytes", "Peak device memory allocated by the last batch",
                                   by_worker, registry=r).labels(worker=worker)

        #: Every recorded webhook attempt: delivered (2xx), retried (another attempt is due), failed
        #: (given up: attempts used up, 410 Gone, or the URL no longer allowed). Per process, as attempted.
        self.webhook_deliveries = Counter("nrg_webhook_deliveries", "Webhook attempts by outcome: delivered, "
                                          "retried, failed", ["outcome"], registry=r)
        for outcome in ("delivered", "retried", "failed"):
            self.webhook_deliveries.labels(outcome=outcome)

        #: Which process this is in a scaled-out deployment (``--role``, ``--worker-id``): join on it.
        self.worker_info = Gauge("nrg_worker_info", "This process's role and worker id (value 1)", ["role", "worker"],
                                 registry=r)

    def track_compiles(self, read: Callable[[], CompileCounts]) -> None:
        """Export the process's ``torch.compile`` counts (``--compile``), read at each scrape from
        ``read`` (``guidance.compilation.CompileMonitor.counts``): ``nrg_recompiles_total``, the
        compilations after the warm-up (each stalls the running batch; 0 when the warm-up covered what
        the jobs ran), and ``nrg_compile_seconds_total`` by phase, ``warmup`` and ``serving``."""
        self.registry.register(_CompileCollector(read, self.worker))

    def final_reward(self, objective: str):
        """The ``nrg_final_reward`` histogram of ``objective`` on this worker."""
        return self._final_reward.labels(worker=self.worker, objective=objective)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CompileCounts(Protocol):
    """What :meth:`Metrics.track_compiles` reads: ``guidance.compilation.CompileCounts`` (this module
    imports no torch)."""

    seconds: float
    recompiles: int
    recompile_seconds: float


class _CompileCollector:
    """Counters whose values live in the compile monitor, read when scraped."""

    def __init__(self, read: Callable[[], CompileCounts], worker: str) -> None:
        self.read = read
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        counts = self.read()
        recompiles = CounterMetricFamily("nrg_recompiles", "torch.compile compilations after the warm-up (each "
                                         "stalls the running batch)", labels=["worker"])
        recompiles.add_metric([self.worker], counts.recompiles)
        seconds = CounterMetricFamily("nrg_compile_seconds", "Seconds spent compiling (torch.compile), in the "
                                      "warm-up and while serving", labels=["worker", "phase"])
        seconds.add_metric([self.worker, "warmup"], counts.seconds - counts.recompile_seconds)
        seconds.add_metric([self.worker, "serving"], counts.recompile_seconds)
        yield recompiles
        yield seconds

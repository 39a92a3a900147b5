"""Prometheus metrics of the serving process (``GET /metrics``).

Each app gets its own registry, so several servers (tests) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nrg_requests", "Video jobs by final or rejected status", ["status"], registry=r)
        self.queue_depth = Gauge("nrg_queue_depth", "Jobs waiting in the queue", registry=r)
        self.batch_size = Histogram("nrg_batch_size", "Samples sharing each denoising step (the achieved batch size)", buckets=(1, 2, 3, 4, 6, 8, 12, 16),
                                    registry=r)
        self.step_time = Histogram("nrg_step_seconds", "Wall time of one denoising step of a batch",
                                   buckets=STEP_BUCKETS, registry=r)
        self.queue_wait = Histogram("nrg_queue_wait_seconds", "Time from creation to start", buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.latency = Histogram("nrg_e2e_latency_seconds", "Time from creation to completion",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.guidance_share = Histogram(
            "nrg_guidance_time_share", "Share of a batch's denoising time spent on reward guidance",
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), registry=r,
        )
        self.final_reward = Histogram("nrg_final_reward", "Reward of the final latents per objective", ["objective"],
                                      buckets=(-10, -5, -2, -1, -0.5, 0, 0.5, 1, 2, 5, 10), registry=r)
        self.skipped_steps = Counter("nrg_guidance_skipped_steps",
                                     "Guided steps skipped for a non-finite reward gradient", registry=r)
        self.device_memory = Gauge("nrg_device_memory_bytes", "Peak device memory allocated by the last batch",
                                   registry=r)

        #: Which process this is in a scaled-out deployment (``--role``, ``--worker-id``): join on it.
        self.worker_info = Gauge("nrg_worker_info", "This process's role and worker id (value 1)", ["role", "worker"],
                                 registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

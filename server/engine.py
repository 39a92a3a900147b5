"""The worker that owns the device: batches queued jobs and runs them through the guided sampler.

One thread, one device. Jobs are taken oldest first; the oldest queued job fixes the batch key
(model, checkpoint, size, frames, steps) and the worker gathers up to ``max_batch``
queued jobs with that key, waiting at most ``batch_wait_ms`` for more. Taking the oldest job first
means no key starves. Prompts, seeds, CFG scales, weights and strengths vary freely inside a batch.

Failure isolation: when a batch of several raises (a CUDA OOM, a poison input), its jobs are re-run
one by one, so only the job that really fails is failed, with a clear error; the worker keeps
serving. Cancellation is checked before every step and a cancelled job leaves its batch there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from guidance.families.base import PipelineFamily, VideoShape
from guidance.nrg import DEFAULT_PARTICLES, GuidanceSpec
from guidance.rewards import RewardFunction
from guidance.sampler import SampleSpec, StepEvent, sample
from guidance.video_io import frames_to_uint8, write_video
from server.events import EventBus
from server.metrics import Metrics
from server.store import CANCELLED, COMPLETED, FAILED, Job, JobStore

log = logging.getLogger("nrg.engine")


@dataclass
class HostedModel:
    """A loaded pipeline with what serves it: reward model, aligned checkpoints, defaults."""

    name: str
    family: PipelineFamily
    reward: RewardFunction | None
    checkpoints: Any | None  # guidance.checkpoints.CheckpointRegistry
    default_shape: VideoShape
    default_steps: int

    def activate(self, checkpoint: str | None) -> None:
        if self.checkpoints is not None:
            self.checkpoints.activate(checkpoint)


def batch_key(params: Mapping[str, Any]) -> tuple:
    """What jobs must share to run as one batch. Guidance (weights, strength, window, mode, particles)
    is per sample in the sampler, so it is not part of the key."""
    return (params["model"], params.get("checkpoint"), params["width"], params["height"], params["num_frames"],
            params["num_inference_steps"])


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _write_thumbnail(frame: np.ndarray, path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(frame).save(tmp, format="WEBP", quality=85)
    tmp.replace(path)


class Engine:
    def __init__(self, models: Mapping[str, HostedModel], store: JobStore, bus: EventBus, metrics: Metrics,
                 max_batch: int = 4, batch_wait_ms: float = 50.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        self.models = dict(models)
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000.0
        self._wake = threading.Condition()
        self._stopping = False
        self._cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="nrg-engine", daemon=True)

    # -- called from HTTP handlers ----------------------------------------------------------------
    def start(self) -> None:
        for job_id in self.store.recover():
            log.info("re-queued %s, which was running when the previous process stopped", job_id)
        self.metrics.queue_depth.set(self.store.count_queued())
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish the running batch (up to ``timeout``) and stop; True if it finished. Work still
        running when the process exits stays ``in_progress`` in the store and is re-queued at the next
        start, so nothing is lost either way."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def wake(self) -> None:
        self.metrics.queue_depth.set(self.store.count_queued())
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next step (queued jobs are cancelled in the store directly)."""
        with self._wake:
            self._cancelled.add(job_id)

    # -- the worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self.store.count_queued():
                    self._wake.wait(timeout=1.0)
                if self._stopping:
                    return
            batch = self._collect()
            if batch:
                self._run(batch)

    def _collect(self) -> list[Job]:
        """The oldest queued job and up to max_batch - 1 others with its key, waiting a little."""
        deadline = time.monotonic() + self.batch_wait_s
        while True:
            queued = self.store.queued()
            if not queued:
                return []
            key = batch_key(queued[0].params)
            batch = [job for job in queued if batch_key(job.params) == key][: self.max_batch]
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                return batch
            with self._wake:
                if self._stopping:
                    return []
                self._wake.wait(timeout=remaining)

    def _run(self, jobs: list[Job]) -> None:
        started = [job for job in jobs if self.store.mark_started(job.id)]
        self.metrics.queue_depth.set(self.store.count_queued())
        if not started:
            return
        now = time.time()
        for job in started:
            self.metrics.queue_wait.observe(now - job.created_at)
            self.bus.publish(job.id, "started", batch_size=len(started))
        try:
            self._execute(started)
        except Exception as exc:  # noqa: BLE001 - isolate every failure to the jobs it hit
            if _is_oom(exc) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(started) > 1:
                log.warning("batch of %d failed (%s); retrying its jobs one by one", len(started), exc)
                for job in started:
                    self.store.requeue(job.id)
                    refreshed = self.store.get(job.id)
                    if refreshed is not None:
                        self._run([refreshed])
                return
            job = started[0]
            code = "out_of_memory" if _is_oom(exc) else "generation_error"
            log.exception("job %s failed", job.id)
            self._finish(job, FAILED, error=(code, f"{type(exc).__name__}: {exc}"))

    def _finish(self, job: Job, status: str, result: dict[str, Any] | None = None,
                error: tuple[str, str] | None = None) -> None:
        with self._wake:
            self._cancelled.discard(job.id)
        if not self.store.finish(job.id, status, result, error):
            return  # already finished, e.g. cancelled by the client while it ran
        self.metrics.requests.labels(status=status).inc()
        if status == COMPLETED:
            self.metrics.latency.observe(time.time() - job.created_at)
            self.bus.publish(job.id, status, **result)
        elif error is not None:
            self.bus.publish(job.id, status, error={"code": error[0], "message": error[1]})
        else:
            self.bus.publish(job.id, status)

    def _execute(self, jobs: list[Job]) -> None:
        params = jobs[0].params
        model = self.models[params["model"]]
        shape = VideoShape(height=params["height"], width=params["width"], frames=params["num_frames"])
        steps = params["num_inference_steps"]
        specs = [self._spec(job.params) for job in jobs]
        ids = [job.id for job in jobs]
        device = model.family.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model.activate(params.get("checkpoint"))
        last_step = [time.perf_counter()]

        def on_step(event: StepEvent) -> None:
            now = time.perf_counter()
            self.metrics.step_time.observe(now - last_step[0])
            last_step[0] = now
            progress = int(100 * event.step / event.steps)
            for row, sample_id in enumerate(event.ids):
                job_id = ids[sample_id]
                self.store.set_progress(job_id, min(progress, 99))
                data: dict[str, Any] = {"step": event.step, "steps": event.steps, "t": round(event.t, 6),
                                        "progress": min(progress, 99)}
                if event.rewards is not None:
                    data["rewards"] = dict(zip(model.reward.objectives, event.rewards[row].tolist()))
                self.bus.publish(job_id, "step", **data)

        def cancelled() -> set[int]:
            with self._wake:
                return {i for i, job_id in enumerate(ids) if job_id in self._cancelled}

        start = time.perf_counter()
        result = sample(model.family, specs, shape, steps, model.reward, on_step=on_step, cancelled=cancelled)
        inference_s = time.perf_counter() - start
        timings = result.timings
        busy = timings["denoise_s"] + timings["guidance_s"]
        self.metrics.batch_size.observe(len(jobs))
        if busy > 0:
            self.metrics.guidance_share.observe(timings["guidance_s"] / busy if model.reward else 0.0)
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        if peak_mb is not None:
            self.metrics.device_memory.set(peak_mb * 2**20)
        for sample_id in set(range(len(jobs))) - set(result.ids):
            self._finish(jobs[sample_id], CANCELLED, error=("cancelled", "cancelled by the client"))
        for row, sample_id in enumerate(result.ids):
            job = jobs[sample_id]
            encode_start = time.perf_counter()
            write_video(result.frames[row], self.store.video_path(job.id), fps=job.params["fps"])
            _write_thumbnail(frames_to_uint8(result.frames[row][0]), self.store.thumbnail_path(job.id))
            rewards = None
            if result.rewards is not None:
                rewards = dict(zip(result.objectives, (round(v, 6) for v in result.rewards[row].tolist())))
                for name, value in rewards.items():
                    self.metrics.final_reward.labels(objective=name).observe(value)
            self.metrics.skipped_steps.inc(result.skipped_steps[row])
            started_at = self.store.get(job.id).started_at or job.created_at
            self._finish(job, COMPLETED, result={
                "rewards": rewards,
                "guidance_skipped_steps": result.skipped_steps[row],
                # The job's compute against an unguided one (denoiser passes / steps): > 1 for particles.
                "cost_vs_unguided": round(result.denoiser_passes[row] / job.params["num_inference_steps"], 4),
                "batch_size": len(jobs),
                "queue_time_s": round(started_at - job.created_at, 4),
                "inference_time_s": round(inference_s, 4),
                "encode_time_s": round(time.perf_counter() - encode_start, 4),
                "peak_memory_mb": None if peak_mb is None else round(peak_mb, 1),
            })

    @staticmethod
    def _spec(params: Mapping[str, Any]) -> SampleSpec:
        guidance = params.get("reward_guidance")
        return SampleSpec(
            prompt=params["prompt"],
            negative_prompt=params.get("negative_prompt"),
            seed=params["seed"],
            cfg_scale=params["guidance_scale"],
            guidance=GuidanceSpec(
                weights=guidance["weights"], strength=guidance["strength"], window=tuple(guidance["window"]),
                mode=guidance["mode"], particles=guidance.get("particles", DEFAULT_PARTICLES),
            ) if guidance else None,
        )

"""The worker that owns the device: batches queued jobs and runs them through the guided sampler.

One thread, one device. Jobs are taken oldest first; the oldest queued job fixes the batch key
(model, checkpoint, size, frames, steps) and the worker gathers up to ``max_batch``
queued jobs with that key, waiting at most ``batch_wait_ms`` for more. Taking the oldest job first
means no key starves. Prompts, seeds, CFG scales, weights and strengths vary freely inside a batch.

Failure isolation: when a batch of several raises (a CUDA OOM, a poison input), its jobs are re-run
one by one, so only the job that really fails is failed, with a clear error; the worker keeps
serving. Cancellation is checked before every step and a cancelled job leaves its batch there; a job
cancelled or deleted after its last step is dropped alone and leaves no files. A sample whose latents
or frames are not finite fails alone with ``non_finite_output``.

Storage faults (disk full, SQLite I/O errors) never fail a job: the jobs they interrupt go back to the
queue (still ``in_progress`` in the store if even that write fails, which the next start re-queues),
and the worker waits out ``fault_backoff_s`` before it tries again. When the faults outlast that
backoff, or the database is corrupt, or the worker thread itself breaks, the engine reports a
``failure`` (``/health`` answers 503 with it) and calls ``on_fatal`` so the process exits non-zero.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from guidance.families.base import PipelineFamily, VideoShape
from guidance.nrg import DEFAULT_PARTICLES, GuidanceSpec
from guidance.output_checks import output_problems
from guidance.rewards import RewardFunction
from guidance.sampler import SampleSpec, StepEvent, sample
from guidance.video_io import frames_to_uint8, write_video
from server.events import EventBus
from server.metrics import Metrics
from server.store import CANCELLED, COMPLETED, FAILED, Job, JobStore
from server.store_errors import is_corruption, is_storage_fault

log = logging.getLogger("nrg.engine")

#: Waits of the worker between attempts while storage faults persist (about a minute in all); when a
#: fault outlasts them the worker gives up and the process exits for its supervisor to restart it.
FAULT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


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
    try:
        Image.fromarray(frame).save(tmp, format="WEBP", quality=85)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a partial file after a full disk


class Engine:
    def __init__(self, models: Mapping[str, HostedModel], store: JobStore, bus: EventBus, metrics: Metrics,
                 max_batch: int = 4, batch_wait_ms: float = 50.0,
                 fault_backoff_s: tuple[float, ...] = FAULT_BACKOFF_S,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        self.models = dict(models)
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.fault_backoff_s = tuple(fault_backoff_s)
        self.on_fatal = on_fatal
        #: Why the worker stopped for good (it no longer serves), or None while it is healthy.
        self.failure: str | None = None
        self._wake = threading.Condition()
        self._stopping = False
        #: Jobs the worker holds right now, and those of them the client cancelled.
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        #: Set by a storage fault: jobs it interrupted may still read in_progress and must be re-queued.
        self._orphans = False
        self._thread = threading.Thread(target=self._loop, name="nrg-engine", daemon=True)

    # -- called from HTTP handlers ----------------------------------------------------------------
    def start(self) -> None:
        for job_id in self.store.recover():
            log.info("re-queued %s, which was running when the previous process stopped", job_id)
        missing = self.store.missing_outputs()
        if missing:
            log.warning("%d completed jobs have lost their video file (their content answers 410): %s",
                        len(missing), ", ".join(missing))
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
        """The worker runs and takes new work (false while stopping and after a failure)."""
        return self._thread.is_alive() and not self._stopping and self.failure is None

    @property
    def finished(self) -> bool:
        """The worker thread has ended (stopped, failed, or never started)."""
        return not self._thread.is_alive()

    @property
    def busy(self) -> bool:
        with self._wake:
            return bool(self._running)

    def wake(self) -> None:
        self.metrics.queue_depth.set(self.store.count_queued())
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next step. Queued jobs are cancelled in the store directly and
        never start, so only ids the worker holds are remembered (and forgotten when it lets go)."""
        with self._wake:
            if job_id in self._running:
                self._cancelled.add(job_id)

    # -- the worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - whatever kills the worker must be reported
            log.exception("the engine worker died")
            self._fail(f"worker died: {type(exc).__name__}: {exc}")

    def _serve(self) -> None:
        """Run batches until stopped; wait out storage faults, give up when they persist."""
        faults = 0
        while True:
            try:
                if not self._wait_for_work():
                    return
                self._requeue_orphans()
                batch = self._collect()
                if batch:
                    self._run(batch)
                faults = 0
            except Exception as exc:  # noqa: BLE001 - sorted below: wait and retry, or give up
                if is_corruption(exc) or not is_storage_fault(exc):
                    raise
                self._orphans = True
                if faults == len(self.fault_backoff_s):
                    log.error("storage fault persists after %d retries: %s", faults, exc)
                    self._fail(f"storage fault persists: {exc}")
                    return
                log.warning("storage fault (%s); retrying in %g s", exc, self.fault_backoff_s[faults])
                with self._wake:
                    self._wake.wait_for(lambda: self._stopping, timeout=self.fault_backoff_s[faults])
                faults += 1

    def _wait_for_work(self) -> bool:
        """Block until a job is queued or orphans wait to be re-queued; False once stopping."""
        with self._wake:
            while not self._stopping and not self._orphans and not self.store.count_queued():
                self._wake.wait(timeout=1.0)
            return not self._stopping

    def _requeue_orphans(self) -> None:
        """Between batches no job runs, so every in_progress row is one a storage fault interrupted."""
        if self._orphans:
            for job_id in self.store.recover():
                log.info("re-queued %s, interrupted by a storage fault", job_id)
            self._orphans = False

    def _fail(self, reason: str) -> None:
        self.failure = reason
        if self.on_fatal is not None:
            self.on_fatal(reason)

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
        ids = {job.id for job in jobs}
        with self._wake:
            self._running |= ids
        try:
            self._run_held(jobs)
        finally:
            with self._wake:
                self._running -= ids
                self._cancelled -= ids

    def _run_held(self, jobs: list[Job]) -> None:
        started: list[Job] = []
        try:
            for job in jobs:
                if self.store.mark_started(job.id):
                    started.append(job)
            self.metrics.queue_depth.set(self.store.count_queued())
            if not started:
                return
            now = time.time()
            for job in started:
                self.metrics.queue_wait.observe(now - job.created_at)
                self.bus.publish(job.id, "started", batch_size=len(started))
            self._execute(started, started_at=now)
        except Exception as exc:  # noqa: BLE001 - isolate every failure to the jobs it hit
            if is_storage_fault(exc) or is_corruption(exc):
                raise  # the disk, not these jobs, failed: the loop re-queues them and waits
            if _is_oom(exc) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(started) > 1:
                log.warning("batch of %d failed (%s); retrying its jobs one by one", len(started), exc)
                for job in started:
                    self.store.requeue(job.id)
                    refreshed = self.store.get(job.id)
                    if refreshed is not None:
                        self._run_held([refreshed])
                return
            job = started[0]
            code = "out_of_memory" if _is_oom(exc) else "generation_error"
            log.exception("job %s failed", job.id)
            self._finish(job, FAILED, error=(code, f"{type(exc).__name__}: {exc}"))

    def _finish(self, job: Job, status: str, result: dict[str, Any] | None = None,
                error: tuple[str, str] | None = None) -> bool:
        """Record the outcome; False if the job had already finished (cancelled or deleted meanwhile)."""
        if not self.store.finish(job.id, status, result, error):
            return False
        self.metrics.requests.labels(status=status).inc()
        if status == COMPLETED:
            self.metrics.latency.observe(time.time() - job.created_at)
            self.bus.publish(job.id, status, **result)
        elif error is not None:
            self.bus.publish(job.id, status, error={"code": error[0], "message": error[1]})
        else:
            self.bus.publish(job.id, status)
        return True

    def _execute(self, jobs: list[Job], started_at: float) -> None:
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
                try:
                    self.store.set_progress(job_id, min(progress, 99))
                except Exception as exc:  # noqa: BLE001 - progress is advisory; the outcome write is not
                    if not is_storage_fault(exc):
                        raise
                    log.warning("could not record the progress of %s: %s", job_id, exc)
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
        problems = output_problems(result, steps)
        for row, sample_id in enumerate(result.ids):
            job = jobs[sample_id]
            if problems[row] is not None:
                log.error("job %s: %s", job.id, problems[row])
                self._finish(job, FAILED, error=("non_finite_output", problems[row]))
                continue
            encode_start = time.perf_counter()
            try:
                write_video(result.frames[row], self.store.video_path(job.id), fps=job.params["fps"])
                _write_thumbnail(frames_to_uint8(result.frames[row][0]), self.store.thumbnail_path(job.id))
            except Exception as exc:  # noqa: BLE001 - one job's encode failure is that job's alone
                self.store.remove_outputs(job.id)
                if is_storage_fault(exc):
                    raise
                log.exception("job %s: writing its video failed", job.id)
                self._finish(job, FAILED, error=("encode_error", f"{type(exc).__name__}: {exc}"))
                continue
            rewards = rewards_z = None
            if result.rewards is not None:
                rewards = dict(zip(result.objectives, (round(v, 6) for v in result.rewards[row].tolist())))
                calibration = getattr(model.reward, "calibration", None)
                rewards_z = None if calibration is None else {
                    k: round(v, 4) for k, v in calibration.z_scores(rewards).items()}
                for name, value in rewards.items():
                    self.metrics.final_reward.labels(objective=name).observe(value)
            self.metrics.skipped_steps.inc(result.skipped_steps[row])
            completed = self._finish(job, COMPLETED, result={
                "rewards": rewards,
                "rewards_z": rewards_z,
                "guidance_skipped_steps": result.skipped_steps[row],
                # The job's compute against an unguided one (denoiser passes / steps): > 1 for particles.
                "cost_vs_unguided": round(result.denoiser_passes[row] / job.params["num_inference_steps"], 4),
                "batch_size": len(jobs),
                "queue_time_s": round(started_at - job.created_at, 4),
                "inference_time_s": round(inference_s, 4),
                "encode_time_s": round(time.perf_counter() - encode_start, 4),
                "peak_memory_mb": None if peak_mb is None else round(peak_mb, 1),
            })
            if not completed:
                self.store.remove_outputs(job.id)  # cancelled or deleted while it was being encoded

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
                mode=guidance["mode"], particles=guidance.get("particles") or DEFAULT_PARTICLES,
            ) if guidance else None,
        )

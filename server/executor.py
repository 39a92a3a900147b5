"""The executor: owns the device and the running batch, admits jobs into it, steps it, lets them go.

It knows jobs only as far as turning their parameters into samples and their samples' results
into the fields a finished job reports; which jobs to admit is the policy's (``server.scheduling``),
recording outcomes the engine's and the writer's. One executor serves every hosted model, one
batch at a time: a batch has one model, checkpoint and shape (the policy's key).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from guidance.batch_state import BatchState
from guidance.families.base import VideoShape
from guidance.judges.as_reward import JudgeReward
from guidance.memory import MemoryEstimate, batch_estimate
from guidance.nrg import GRADIENT_MODES
from guidance.output_checks import output_problems
from guidance.rewards import default_chunk_rows
from guidance.sample_types import SampleProgress, SampleResult, SampleSpec
from guidance.video_io import HostFrames, uint8_on_host
from server.hosted_model import HostedModel
from server.input_reference import fitted_image
from server.input_video import fitted_video
from server.job_spec import BatchKey, JobSpec
from server.judging import HeldOutJudges
from server.metrics import Metrics
from server.scheduling import RunningBatch
from server.step_costs import StepTimes
from server.store import Job
from server.unguided_twin import TwinComparison, compare, job_of_twin, twin_id, twin_sample, unusable_twin


@dataclass
class RunningJob:
    job: Job
    #: Wall-clock start (queue time ends here) and the monotonic clock at admission.
    started_at: float
    admitted: float
    #: Samples that shared each of its steps (its achieved batch size is their mean).
    sizes: list[int] = field(default_factory=list)


@dataclass
class FinishedSample:
    """A sample that left the batch: its uint8 frames on their way to the host (None when unusable),
    or the problem."""

    job: Job
    frames: HostFrames | None
    problem: str | None
    result: dict[str, Any]


#: Reads an input file stored with a job (``Store.read_input``): (job id, key) -> bytes, or None if gone.
InputReader = Callable[[str, str], "bytes | None"]


class BatchExecutor:
    def __init__(self, models: Mapping[str, HostedModel], metrics: Metrics, judges: HeldOutJudges | None = None,
                 batch_invariant: bool = False, inputs: InputReader | None = None,
                 memory_bounded: bool = False, step_times: StepTimes | None = None) -> None:
        self.models = dict(models)
        #: Where each step's seconds are recorded by key and rows (the engine's step-cost bound reads them).
        self.step_times = step_times
        #: Admission counts on the memory estimate, which assumes one reward row per backward
        #: (``guidance.rewards.default_chunk_rows``).
        self.memory_bounded = memory_bounded
        #: Where image-to-video jobs' images are read from (the job store).
        self.inputs = inputs
        #: One row per model call (``BatchState.batch_invariant``): videos independent of their batch-mates.
        self.batch_invariant = batch_invariant
        self.metrics = metrics
        self.judges = judges or HeldOutJudges({})
        self.batch: BatchState | None = None
        self.model: HostedModel | None = None
        self.key: BatchKey | None = None
        self.solo = False
        self.jobs: dict[str, RunningJob] = {}
        self._last_step = time.perf_counter()
        self._estimates: dict[tuple[str, VideoShape, str | None], MemoryEstimate] = {}

    @property
    def job_ids(self) -> set[str]:
        return set(self.jobs)

    def running(self) -> RunningBatch | None:
        """The running batch as the policy sees it; None when nothing runs."""
        if not self.jobs:
            return None
        return RunningBatch(self.key, self.batch.rows_in_use, joinable=self.batch.joinable and not self.solo)

    def estimate(self, spec: JobSpec) -> MemoryEstimate:
        """The memory estimate of batches of this job's model, shape and reward (``guidance.memory``), cached.
        A job guided by a judge's gradient holds that gradient's graph instead of a latent reward chunk:
        one row's, measured at a small shape by ``JudgeReward.gradient_graph_bytes`` and scaled (the first
        estimate of a model, shape and judge runs that probe)."""
        shape = _shape(spec)
        judged = spec.judge is not None and spec.guidance is not None and spec.guidance.mode in GRADIENT_MODES
        key = (spec.model, shape, spec.judge if judged else None)
        if key not in self._estimates:
            model = self.models[spec.model]
            estimate = batch_estimate(model.family, model.reward, shape)
            if judged:
                estimate = replace(estimate, reward=self._reward_of(model, spec).gradient_graph_bytes(shape))
            self._estimates[key] = estimate
        return self._estimates[key]

    def admit(self, jobs: list[Job], key: BatchKey, started_at: float, solo: bool = False) -> None:
        """Start a batch with ``jobs`` or add them to the running one (same ``key``). Raises what the
        sampler raises (bad input, out of memory); the running batch is untouched then."""
        if not jobs:
            return
        spec = jobs[0].spec
        if not self.jobs:
            model = self.models[spec.model]
            model.activate(spec.batch_weights)
            shape = _shape(spec)
            device = model.family.device
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            loras = model.checkpoints.multi_lora if model.checkpoints is not None else None
            reward = self._reward_of(model, spec)
            self.batch = BatchState(model.family, shape, reward, loras=loras, batch_invariant=self.batch_invariant,
                                    reward_chunk_rows=default_chunk_rows(reward, device, self.memory_bounded),
                                    step_cache=model.step_cache)
            self.model, self.key, self.solo = model, key, solo
        elif key != self.key:
            raise ValueError(f"jobs of key {key} cannot join a batch of key {self.key}")
        by_steps: dict[int, list[Job]] = {}
        for job in jobs:
            by_steps.setdefault(job.spec.num_inference_steps, []).append(job)
        added: list[str] = []
        try:
            for steps, group in by_steps.items():
                specs, ids = [], []
                for job in group:  # a twin joins with its job, with its steps: it leaves with it too
                    sample = self._sample_spec(job)
                    specs.append(sample)
                    ids.append(job.id)
                    if job.spec.compare_unguided:
                        specs.append(twin_sample(sample))
                        ids.append(twin_id(job.id))
                self.batch.add(specs, steps, ids)
                added += ids
        except Exception:
            self.batch.remove(added)  # all or none of ``jobs`` join
            if not self.jobs:
                self._reset()
            raise
        now = time.perf_counter()
        if not self.jobs:
            self._last_step = now
        for job in jobs:
            self.jobs[job.id] = RunningJob(job, started_at, now)

    def _sample_spec(self, job: Job) -> SampleSpec:
        """The job as the sampler takes it; an image-to-video job's image (a video-to-video job's video) read
        from the store, checked against its recorded sha256 and fitted to the video's size and frames
        (``server.input_reference``, ``server.input_video``)."""
        sample_spec = job.spec.to_sample_spec()
        ref = job.spec.input_reference
        if ref is None:
            return sample_spec
        data = None if self.inputs is None else self.inputs(job.id, ref.key)
        if data is None:
            kind = "video" if ref.is_video else "image"
            raise ValueError(f"input_reference: the {kind} of job {job.id} is not in the job store")
        spec = job.spec
        if ref.is_video:
            frames = fitted_video(data, ref, spec.width, spec.height, spec.num_frames, spec.fps)
            return replace(sample_spec, video=frames)
        return replace(sample_spec, image=fitted_image(data, ref, spec.width, spec.height))

    def _reward_of(self, model: HostedModel, spec: JobSpec):
        """What the batch's rows are scored by: the job's judge (ranking particles, or its gradient through
        the decoder) or the model's reward."""
        judge = spec.judge
        if judge is None:
            return model.reward
        if judge not in self.judges.judges:
            raise ValueError(f"judge {judge} is not loaded in this worker")
        return JudgeReward(model.family, self.judges.judges[judge].judge, float(spec.fps))

    def cancel(self, job_ids: set[str]) -> list[Job]:
        """Stop these jobs; those that left the batch at once (the others ride along to its end)."""
        if self.batch is None:
            return []
        removed = self.batch.remove(set(job_ids) | {twin_id(job_id) for job_id in job_ids})
        left = [self.jobs.pop(job_id).job for job_id in removed if job_id in self.jobs and job_id not in self.batch.ids]
        if not self.jobs:
            self._reset()
        return left

    def step(self) -> list[SampleProgress]:
        """One step of the batch; the progress of its jobs (their twins are samples of the batch, not jobs)."""
        rows = self.batch.rows_in_use
        started = time.perf_counter()
        report = self.batch.step()
        now = time.perf_counter()
        if self.step_times is not None:
            self.step_times.observe(self.key, rows, now - started)
        self.metrics.step_time.observe(now - self._last_step)
        self._last_step = now
        size = len(report)
        self.metrics.batch_size.observe(size)
        jobs = []
        for progress in report:
            running = self.jobs.get(progress.id)
            if running is not None:
                running.sizes.append(size)
                jobs.append(progress)
        return jobs

    def pop_finished(self) -> list[FinishedSample]:
        """The samples that took their last step, with their frames moved to the host."""
        if self.batch is None or not self.batch.finished():
            return []
        done = set(self.batch.finished())
        result = self.batch.pop_finished()
        model = self.model
        timings = result.timings
        busy = timings["denoise_s"] + timings["guidance_s"]
        if busy > 0:
            self.metrics.guidance_share.observe(timings["guidance_s"] / busy if self.batch.reward else 0.0)
        device = model.family.device
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        if peak_mb is not None:
            self.metrics.device_memory.set(peak_mb * 2**20)
        # Each row's job: its own, or the job whose twin it is (they finish together).
        owners = [self.jobs[job_of_twin(sid) or sid] for sid in result.ids]
        problems = output_problems(result, [run.job.spec.denoise_steps for run in owners])
        judge_scores = [None] * len(owners)
        if result.frames is not None:
            judge_scores = self.judges.score(
                result.frames, [run.job.spec.prompt for run in owners], [run.job.spec.fps for run in owners],
                [[] if problems[row] else list(run.job.spec.judges) for row, run in enumerate(owners)])
        twins = {job_of_twin(sid): row for row, sid in enumerate(result.ids) if job_of_twin(sid) is not None}
        job_rows = [row for row, sid in enumerate(result.ids) if job_of_twin(sid) is None]
        # Only the jobs' frames go to the host: a twin's video is not kept, only its figures.
        frames = None if result.frames is None else uint8_on_host(
            result.frames[job_rows] if twins else result.frames)
        now = time.perf_counter()
        finished = []
        for position, row in enumerate(job_rows):
            run = self.jobs[result.ids[row]]
            job = run.job
            rewards = self._rewards(result, row)
            calibration = getattr(self.batch.reward, "calibration", None)
            rewards_z = None if rewards is None or calibration is None else {
                k: round(v, 4) for k, v in calibration.z_scores(rewards).items()}
            sizes = run.sizes or [1]
            fields: dict[str, Any] = {
                "rewards": rewards,
                "rewards_z": rewards_z,
                "judge_scores": judge_scores[row],
                "guidance_skipped_steps": result.skipped_steps[row],
                # Measured time against one unguided row of the same calls (``guidance.row_time``).
                "cost_vs_unguided": _ratio(result.row_seconds[row].vs_unguided),
                "denoiser_passes": result.denoiser_passes[row],
                # A judge's extra cost: each scoring decodes the clean estimate (backpropagated in gradient modes).
                "guidance_decodes": result.guidance_decodes[row],
                # Denoiser calls whose blocks after the first the step cache skipped (``--step-cache``).
                "cached_denoiser_calls": result.cached_calls[row],
                "batch_size": max(1, round(sum(sizes) / len(sizes))),
                "queue_time_s": round(run.started_at - job.created_at, 4),
                "inference_time_s": round(now - run.admitted, 4),
                "peak_memory_mb": None if peak_mb is None else round(peak_mb, 1),
            }
            if job.id in twins:
                fields.update(self._comparison(job, fields, result, twins[job.id], problems, judge_scores)
                              .result_fields())
            finished.append(FinishedSample(job, None if problems[row] else frames.row(position), problems[row],
                                           fields))
        for job_id in done:
            self.jobs.pop(job_id, None)  # cancelled riders included: they were dropped from the result
        if not self.jobs:
            self._reset()
        return finished

    def _rewards(self, result: SampleResult, row: int) -> dict[str, float] | None:
        if result.rewards is None:
            return None
        return dict(zip(result.objectives, (round(v, 6) for v in result.rewards[row].tolist())))

    def _comparison(self, job: Job, fields: dict[str, Any], result: SampleResult, twin_row: int,
                    problems: list[str | None], judge_scores: list[Any]) -> TwinComparison:
        """The job's figures against its twin's (``server.unguided_twin``)."""
        if problems[twin_row] is not None:
            return unusable_twin(problems[twin_row])
        return compare(job.spec.guidance.weights, fields["rewards"], fields["judge_scores"],
                       self._rewards(result, twin_row), judge_scores[twin_row])

    def abandon(self) -> list[Job]:
        """Drop the running batch (its step failed, or the store did); the jobs it held."""
        jobs = [run.job for run in self.jobs.values()]
        self.jobs.clear()
        self._reset()
        return jobs

    def _reset(self) -> None:
        self.batch = self.model = self.key = None
        self.solo = False


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _shape(spec: JobSpec) -> VideoShape:
    return VideoShape(height=spec.height, width=spec.width, frames=spec.num_frames)

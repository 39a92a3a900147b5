"""The worker that owns the device: admits queued jobs into the running batch and steps it.

One thread, one device. At every step boundary the worker asks the batching policy
(``server.scheduling``) which queued jobs start a batch or join the running one (``--batching``:
``continuous`` lets compatible jobs join between steps and refills the slots of finished and
cancelled samples; ``static`` fixes a batch when it starts), has the executor (``server.executor``)
take one step of the batch, publishes each sample's progress, and hands finished samples to the
output writer (``server.output_writer``), which encodes them on its own thread.

Failure isolation: when adding jobs or stepping a batch of several raises (a CUDA OOM, a poison
input), its jobs are re-queued to run alone (``solo``), so only the job that really fails is failed,
with a clear error; the worker keeps serving. Cancellation is taken before every step and a cancelled
job leaves its batch there; a job cancelled or deleted after its last step is dropped alone and leaves
no files. A sample whose latents or frames are not finite fails alone with ``non_finite_output``.

Storage faults (disk full, SQLite I/O errors, a PostgreSQL restart) never fail a job: the running batch
is dropped, the jobs it held go back to the queue (still ``in_progress`` in the store if even that write
fails, which the next start re-queues), and the worker waits out ``fault_backoff_s`` before it tries
again. When the faults outlast that backoff, or the database is corrupt, or the worker thread itself
breaks, the engine reports a ``failure`` (``/health`` answers 503 with it) and calls ``on_fatal`` so
the process exits non-zero.

With a shared store, a worker records outcomes only for jobs nobody else holds (``Store.finish(...,
worker=)``): one whose lease ran out and went to another worker is that worker's to record. A worker
stopped with its batch unfinished after the shutdown grace hands the batch back (``Store.release``),
so another worker runs it at once instead of after the lease.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from guidance.precision import pin_thread_device
from guidance.sample_types import SampleProgress
from server.cancellation import CancelRequests, LocalCancelRequests
from server.config import ServerConfig
from server.events import EventSink
from server.executor import BatchExecutor, FinishedSample
from server.job_spec import BatchKey, JobSpec
from server.hosted_model import HostedModel
from server.judging import HeldOutJudges
from server.metrics import Metrics
from server.output_writer import Output, OutputWriter
from server.scheduling import BatchingMode, BatchingPolicy, QueuedJob
from server.step_costs import StepCostGate, StepTimes
from server.store import COMPLETED, FAILED, LOCAL_WORKER, Job, Store, StoreError, is_corruption, is_storage_fault

log = logging.getLogger("nrg.engine")

#: Progress is written to the store at most this often per batch (events go out every step).
PROGRESS_INTERVAL_S = 0.5
#: How long a stop whose grace ran out waits for the running step to end (the batch is dropped there):
#: a bound on one denoising step of the slowest model, not a time the step is expected to take.
ABANDON_WAIT_S = 300.0


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f}"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Engine:
    def __init__(self, models: Mapping[str, HostedModel], store: Store, bus: EventSink, metrics: Metrics,
                 max_batch: int = ServerConfig.max_batch, batch_wait_ms: float = ServerConfig.batch_wait_ms,
                 batching: BatchingMode = ServerConfig.batching,
                 fault_backoff_s: tuple[float, ...] = ServerConfig.fault_backoff_s,
                 on_fatal: Callable[[str], None] | None = None,
                 cancels: CancelRequests | None = None, worker_id: str = LOCAL_WORKER,
                 lease_s: float = ServerConfig.lease_s, memory_budget: int | None = None,
                 batch_invariant: bool = ServerConfig.batch_invariant, judges: HeldOutJudges | None = None,
                 max_step_slowdown: float | None = ServerConfig.max_step_slowdown) -> None:
        """The settings ``nrg serve`` has flags for default to :class:`ServerConfig`'s, their one home: an
        engine built without them runs as ``nrg serve`` would."""
        # The step-cost bound of joins learns from each batch step's seconds; without it none are recorded.
        gate = None if max_step_slowdown is None else StepCostGate(StepTimes(), max_step_slowdown)
        self.policy = BatchingPolicy(batching, max_batch, batch_wait_ms / 1000.0, gate)
        #: Bytes of device memory batches may use by the estimate of ``guidance.memory`` (None: no limit).
        self.memory_budget = memory_budget
        self.models = dict(models)
        #: This worker's name in the store (the rows it claims) and how long its claims last unrenewed.
        self.worker_id, self.lease_s = worker_id, lease_s
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.fault_backoff_s = tuple(fault_backoff_s)
        self.on_fatal = on_fatal
        self.cancels = cancels or LocalCancelRequests()
        self.executor = BatchExecutor(self.models, metrics, judges, batch_invariant,
                                      inputs=getattr(store, "read_input", None), memory_bounded=memory_budget is not None,
                                      step_times=None if gate is None else gate.times)
        self.writer = OutputWriter(store, self._finish, self._writer_fault)
        #: Why the worker stopped for good (it no longer serves), or None while it is healthy.
        self.failure: str | None = None
        self._wake = threading.Condition()
        self._stopping = False
        #: Set by ``stop`` once its grace ran out mid-batch: the worker drops the batch at its next step.
        self._abandon = False
        #: Jobs whose batch failed: each is retried in a batch of its own.
        self._solo: set[str] = set()
        #: Storage faults met by the writer thread, raised in the worker's loop.
        self._writer_faults: queue.Queue[BaseException] = queue.Queue()
        #: Set by a storage fault: jobs it interrupted may still read in_progress and must be re-queued.
        self._orphans = False
        self._progress_written = 0.0
        #: Set by an out-of-memory failure: the next tick returns the freed blocks to the device.
        self._oom = False
        #: Outcomes written so far (by the worker and the writer): a storage fault ends when it grows.
        self._recorded = 0
        #: Bumped whenever the queue may have changed; with the running batch's size it tells whether
        #: the last plan still holds (so a running batch does not read the queue at every step).
        self._queue_version = 0
        self._planned: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._loop, name="nrg-engine", daemon=True)

    # -- called from HTTP handlers ----------------------------------------------------------------
    def start(self) -> None:
        for job_id in self.store.recover(self.worker_id):
            log.info("re-queued %s, which was running when the previous process stopped", job_id)
        missing = self.store.missing_outputs()
        if missing:
            log.warning("%d completed jobs have lost their video file (their content answers 410): %s",
                        len(missing), ", ".join(missing))
        self.metrics.queue_depth.set(self.store.count_queued())
        self.writer.start()
        self._thread.start()

    def stop(self, timeout: float = ServerConfig.shutdown_grace_s) -> bool:
        """Finish the running batch and its videos (up to ``timeout``) and stop; True if they finished.
        Work still running when the process exits stays ``in_progress`` in the store and is re-queued
        at the next start, so nothing is lost either way; with a shared store it is handed back now."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)
        stepped_out = not self._thread.is_alive()
        if not stepped_out:
            # The grace ran out mid-batch: the batch is dropped at its next step boundary, and this
            # waits for that one step, so that no thread is still computing when the process exits
            # (a thread inside torch then aborts the exit).
            self._abandon = True
            self._thread.join(ABANDON_WAIT_S)
        written = self.writer.stop(max(0.0, deadline - time.monotonic()))
        finished = stepped_out and written
        if not finished and self.store.shared:
            self._hand_back()
        return finished

    def _hand_back(self) -> None:
        """The grace ran out mid-batch (or mid-encode): re-queue this worker's jobs for the other workers
        now, rather than after their lease. A video still being encoded may yet be recorded, while nobody
        else has taken its job."""
        try:
            released = self.store.release(self.worker_id)
        except StoreError as exc:  # the leases still run out; another worker re-runs the jobs then
            log.warning("could not hand back the running jobs (%s); they are re-queued when their lease expires",
                        exc)
            return
        for job_id in released:
            log.info("handed %s back to the queue: the shutdown grace ran out before it finished", job_id)

    @property
    def alive(self) -> bool:
        """The worker runs and takes new work (false while stopping and after a failure)."""
        return self._thread.is_alive() and not self._stopping and self.failure is None

    @property
    def finished(self) -> bool:
        """The worker thread has ended (stopped, failed, or never started)."""
        return not self._thread.is_alive()

    def held_job_ids(self) -> set[str]:
        """The jobs this worker holds (in the batch, or with the writer); safe from any thread."""
        return set(list(self.executor.jobs)) | self.writer.pending

    @property
    def busy(self) -> bool:
        return bool(self.executor.jobs) or bool(self.writer.pending)

    def wake(self) -> None:
        """The queue changed (a job was created or cancelled): plan again at the next step boundary."""
        self.metrics.queue_depth.set(self.store.count_queued())
        with self._wake:
            self._queue_version += 1
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        """Stop a running job at its next step. Queued jobs are cancelled in the store directly and
        never start, and a job past its last step is dropped by the writer (its finish finds it
        cancelled), so only jobs in the batch are asked to stop."""
        if job_id in self.executor.jobs:
            self.cancels.request(job_id)

    # -- the worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            for device in {model.family.device for model in self.models.values()}:
                pin_thread_device(device)  # Triton launches on this thread's current device
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - whatever kills the worker must be reported
            log.exception("the engine worker died")
            self._fail(f"worker died: {type(exc).__name__}: {exc}")

    def _serve(self) -> None:
        """Step until stopped; wait out storage faults, give up when they persist."""
        faults, recorded = 0, self._recorded
        while True:
            try:
                if not self._tick():
                    return
                if self._recorded != recorded:  # an outcome was written: the store works again
                    faults, recorded = 0, self._recorded
            except Exception as exc:  # noqa: BLE001 - sorted below: wait and retry, or give up
                if is_corruption(exc) or not is_storage_fault(exc):
                    raise
                self._interrupted()
                if faults == len(self.fault_backoff_s):
                    log.error("storage fault persists after %d retries: %s", faults, exc)
                    self._fail(f"storage fault persists: {exc}")
                    return
                log.warning("storage fault (%s); retrying in %g s", exc, self.fault_backoff_s[faults])
                with self._wake:
                    self._wake.wait_for(lambda: self._stopping, timeout=self.fault_backoff_s[faults])
                faults += 1

    def _tick(self) -> bool:
        """One step boundary: admit, cancel, step, let finished samples go. False once stopped."""
        if self._abandon:
            self.executor.abandon()
            return False
        try:
            raise self._writer_faults.get_nowait()
        except queue.Empty:
            pass
        if self._oom:
            self._oom = False
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        idle = not self.executor.job_ids
        if idle and self._orphans:
            self.writer.drain()  # what the writer holds is not orphaned
            # Only this worker's jobs: the others' leases ran out during the same fault, but they are
            # their workers' still (re-queueing expired leases is the lease keeper's, and it waits).
            for job_id in self.store.release(self.worker_id):
                log.info("re-queued %s, interrupted by a storage fault", job_id)
            self._orphans = False
        wait_s = None
        running = len(self.executor.jobs)
        if not self._stopping and (running == 0 or self._planned != (self._queue_version, running)):
            self._planned = (self._queue_version, running)
            wait_s = self._admit()
        if not self.executor.job_ids:
            with self._wake:
                if self._stopping:
                    return False
                if wait_s is None and self.store.count_queued(self.models):
                    return True  # jobs queued that cannot start yet: ask the policy again
                self._wake.wait(timeout=1.0 if wait_s is None else wait_s)
            return True
        self._cancel_requested()
        if self.executor.job_ids:
            self._step()
        return True

    def _admit(self) -> float | None:
        """Start or join what the policy says; how long an idle engine may wait, if at all."""
        # A job this worker still runs may read queued (its lease ran out while the store was out of
        # reach, and it was re-queued): it must not join its own batch twice.
        held = self.held_job_ids()
        jobs = {job.id: job for job in self.store.queued(self.models) if job.id not in held}
        self._refuse_over_budget(jobs)
        queued = [QueuedJob(job.id, self._key(job.spec), job.created_at, job.id in self._solo, job.spec.rows)
                  for job in jobs.values()]
        plan = self.policy.plan(queued, self.executor.running(), time.time(), self._capacity(jobs.values()))
        if plan.held_by_cost:
            self.metrics.joins_held_by_cost.inc()
        if not plan.admit:
            return plan.wait_s
        # Atomic across processes sharing the store: a job another worker got meanwhile is left out.
        claimed = {job.id: job for job in self.store.claim([i for i in plan.admit if i in jobs], self.worker_id,
                                                           self.lease_s)}
        started = [claimed[job_id] for job_id in plan.admit if job_id in claimed]
        self.metrics.queue_depth.set(self.store.count_queued())
        if not started:
            return None
        now = time.time()
        size = len(self.executor.job_ids) + len(started)
        for job in started:
            self.metrics.queue_wait.observe(now - job.created_at)
            self.bus.publish(job.id, "started", batch_size=size)
        key = self._key(started[0].spec)
        solo = any(job.id in self._solo for job in started)
        try:
            self.executor.admit(started, key, now, solo=solo)
        except Exception as exc:  # noqa: BLE001 - isolate the failure to the jobs that joined
            self._isolate(started, exc)
        return None

    def _refuse_over_budget(self, jobs: dict[str, Job]) -> None:
        """Fail at once (and drop from ``jobs``) the queued jobs that alone need more than the memory budget by
        the admission estimate: run, they would only run out of memory mid-way. The error gives the figure."""
        if self.memory_budget is None:
            return
        for job in list(jobs.values()):
            try:
                estimate = self.executor.estimate(job.spec)
            except Exception as exc:  # noqa: BLE001 - a probe that fails (out of memory included) fails its job
                error = ("out_of_memory" if _is_oom(exc) else "generation_error",
                         f"the memory estimate failed: {type(exc).__name__}: {exc}")
            else:
                need = estimate.total(job.spec.rows)
                if need <= self.memory_budget:
                    continue
                message = (f"this job needs about {_gib(need)} GiB by the admission estimate (weights "
                           f"{_gib(estimate.weights)}, one backward's graph {_gib(estimate.reward)}, {job.spec.rows} "
                           f"row(s) x {_gib(estimate.per_row)}), over the memory budget of "
                           f"{_gib(self.memory_budget)} GiB; ask for fewer frames, a smaller size or fewer particles")
                error = ("exceeds_memory_budget", message)
            del jobs[job.id]
            if self.store.claim([job.id], self.worker_id, self.lease_s):
                log.warning("job %s refused: %s", job.id, error[1])
                self._finish(job, FAILED, None, error)

    def _capacity(self, jobs: Iterable[Job]) -> dict[BatchKey, int] | None:
        """The rows a batch of each queued key may hold within the memory budget (None: no budget)."""
        if self.memory_budget is None:
            return None
        capacity: dict[BatchKey, int] = {}
        for job in jobs:
            key = self._key(job.spec)
            if key not in capacity:
                capacity[key] = self.executor.estimate(job.spec).rows_within(self.memory_budget)
        return capacity

    def _key(self, spec: JobSpec) -> BatchKey:
        """The policy's key of a job: with the step count when its batch's samples step together
        (static batching, or a multistep scheduler, which keeps batched history)."""
        steppable = self.models[spec.model].family.euler_scheduler
        return spec.batch_key(step_together=self.policy.mode == "static" or not steppable)

    def _cancel_requested(self) -> None:
        wanted = self.cancels.take(self.executor.job_ids)
        if wanted:
            self.executor.cancel(wanted)  # the handler has recorded them as cancelled already

    def _step(self) -> None:
        objectives = self.executor.batch.objectives  # before the batch may empty and go
        try:
            report = self.executor.step()
            finished = self.executor.pop_finished()
        except Exception as exc:  # noqa: BLE001 - isolate the failure to this batch's jobs
            if is_storage_fault(exc) or is_corruption(exc):
                raise
            self._isolate(self.executor.abandon(), exc)
            return
        self._publish_progress(report, objectives)
        for sample in finished:
            self._release(sample)
        self._cancel_requested()  # and requests for the jobs that just left are dropped

    def _isolate(self, jobs: list[Job], exc: Exception) -> None:
        """A batch (or the jobs joining it) failed: retry its jobs alone, or fail the one that ran alone."""
        if is_storage_fault(exc) or is_corruption(exc):
            raise exc
        if _is_oom(exc):
            self._oom = True  # the cache is emptied at the next tick, once ``exc`` no longer holds the graph
        if len(jobs) > 1:
            # The message, not the exception: a kept log record would keep the failed step's tensors.
            log.warning("batch of %d failed (%s); retrying its jobs one by one", len(jobs), str(exc))
            for job in jobs:
                self._solo.add(job.id)
                self.store.requeue(job.id)
            with self._wake:
                self._queue_version += 1
            return
        job = jobs[0]
        self._solo.discard(job.id)
        code = "out_of_memory" if _is_oom(exc) else "generation_error"
        log.error("job %s failed: %s: %s", job.id, type(exc).__name__, exc, exc_info=exc)
        self._finish(job, FAILED, None, (code, f"{type(exc).__name__}: {exc}"))

    def _publish_progress(self, report: list[SampleProgress], objectives: tuple[str, ...]) -> None:
        progress: dict[str, int] = {}
        for sample in report:
            value = min(int(100 * sample.step / sample.steps), 99)
            progress[str(sample.id)] = value
            data: dict[str, Any] = {"step": sample.step, "steps": sample.steps, "t": round(sample.t, 6),
                                    "progress": value}
            if sample.rewards is not None:
                data["rewards"] = dict(zip(objectives, sample.rewards))
            self.bus.publish(str(sample.id), "step", **data)
        now = time.monotonic()
        if now - self._progress_written >= PROGRESS_INTERVAL_S:
            self._progress_written = now
            try:
                self.store.set_progress_many(progress)
            except Exception as exc:  # noqa: BLE001 - progress is advisory; the outcome write is not
                if not is_storage_fault(exc):
                    raise
                log.warning("could not record the progress of %d jobs: %s", len(progress), exc)

    def _release(self, sample: FinishedSample) -> None:
        job = sample.job
        self._solo.discard(job.id)
        if sample.problem is not None:
            log.error("job %s: %s", job.id, sample.problem)
            self._finish(job, FAILED, None, ("non_finite_output", sample.problem))
            return
        for name, value in (sample.result["rewards"] or {}).items():
            self.metrics.final_reward(name).observe(value)
        self.metrics.skipped_steps.inc(sample.result["guidance_skipped_steps"])
        self.writer.submit(Output(job, sample.frames, sample.result))

    def _interrupted(self) -> None:
        """After a storage fault: drop the running batch; its jobs are re-queued once the store heals."""
        for job in self.executor.abandon():
            self._solo.discard(job.id)
        self._orphans = True

    def _writer_fault(self, exc: BaseException) -> None:
        self._writer_faults.put(exc)
        with self._wake:
            self._wake.notify_all()

    def _fail(self, reason: str) -> None:
        self.failure = reason
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def _finish(self, job: Job, status: str, result: dict[str, Any] | None = None,
                error: tuple[str, str] | None = None) -> bool:
        """Record the outcome; False if the job had already finished (cancelled or deleted meanwhile) or
        is another worker's now."""
        if not self.store.finish(job.id, status, result, error, worker=self.worker_id):
            return False
        self._recorded += 1
        self.metrics.requests.labels(status=status).inc()
        if status == COMPLETED:
            self.metrics.latency.observe(time.time() - job.created_at)
            self.bus.publish(job.id, status, **result)
        elif error is not None:
            self.bus.publish(job.id, status, error={"code": error[0], "message": error[1]})
        else:
            self.bus.publish(job.id, status)
        return True

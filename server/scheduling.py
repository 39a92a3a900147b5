"""The batching policy: which queued jobs start or join the running batch, and when. No torch.

The engine asks :meth:`BatchingPolicy.plan` at every step boundary, with the queue (oldest first)
and what runs; the answer is the jobs to admit now, or how long an idle engine may wait for more.

* Capacity is counted in rows, the samples the denoiser runs per call: a job is one row, a search job
  (``best_of_n``, ``fk``) one per particle. A batch holds up to ``max_batch`` rows, and fewer when
  the engine's memory estimate allows fewer for the key (``capacity``; ``guidance.memory``). A job
  that alone needs more rows than that still runs, alone, when nothing else does.
* With nothing running (both modes), the oldest queued job fixes the key and the queued jobs with
  that key that fit start together, once the batch is full or the oldest job has waited
  ``batch_wait_s`` since it arrived.
* ``static``: the key (``server.job_spec.BatchKey``: model weights, size, frames, judge) includes the
  step count, and a batch is fixed when it starts.
* ``continuous``: the key drops the step count (each sample carries its own schedule), and queued
  jobs join a running batch of their key at the next step boundary, up to its capacity in rows, as
  finished and cancelled samples free their rows. With a step-cost gate (``nrg serve --max-step-slowdown``,
  ``server.step_costs``) a joiner must also keep the batch's predicted step time within the bound
  learnt for its key: rows that fit but would slow every running job too much wait.

Fairness is FIFO in both: jobs are considered oldest first and admission stops at the first queued job
that cannot join (another key), so a stream of same-key arrivals never overtakes an older job of
another key; once the running batch drains, that job starts the next one. A job marked ``solo`` (its
batch failed, so it is retried alone to find the culprit) never shares a batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from server.step_costs import StepCostGate

BatchingMode = Literal["static", "continuous"]
BATCHING_MODES: tuple[str, ...] = ("static", "continuous")


@dataclass(frozen=True)
class QueuedJob:
    id: str
    key: Hashable
    created_at: float
    solo: bool = False
    #: Rows the job adds to a batch: its particles for the search modes, else 1.
    rows: int = 1


@dataclass(frozen=True)
class RunningBatch:
    key: Hashable
    #: Rows in use (a search job's particles count each).
    size: int
    #: Whether samples may join between steps (False for multistep schedulers and solo retries).
    joinable: bool


@dataclass(frozen=True)
class Plan:
    """Jobs to admit now (start a batch, or join the running one), else ``wait_s``: how long an idle
    engine may wait for the batch to fill before asking again (None: nothing to wait for)."""

    admit: tuple[str, ...] = ()
    wait_s: float | None = None
    #: A queued job that fits the running batch's rows was held back by the step-cost bound.
    held_by_cost: bool = False


class BatchingPolicy:
    def __init__(self, mode: BatchingMode = "continuous", max_batch: int = 4, batch_wait_s: float = 0.05,
                 step_cost: StepCostGate | None = None) -> None:
        if mode not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {', '.join(BATCHING_MODES)}; got {mode!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        if batch_wait_s < 0:
            raise ValueError(f"batch_wait must be >= 0; got {batch_wait_s}")
        self.mode = mode
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        #: Joins of a running batch also need its predicted step time within this gate's bound (None: rows only).
        self.step_cost = step_cost

    def plan(self, queued: Sequence[QueuedJob], running: RunningBatch | None, now: float,
             capacity: Mapping[Hashable, int] | None = None) -> Plan:
        """``queued`` oldest first; ``running`` None when no batch runs; ``capacity`` the most rows a
        batch of a key may hold by the memory estimate (keys absent: ``max_batch``)."""
        if not queued:
            return Plan()
        if running is not None and running.size > 0:
            if self.mode == "static" or not running.joinable:
                return Plan()
            return self._joiners(queued, running, self._room(running.key, capacity))
        first = queued[0]
        if first.solo:
            return Plan((first.id,))
        # Starting a batch, the oldest job has fixed the key: its batch-mates may be anywhere behind.
        room = self._room(first.key, capacity)
        batch, rows, full = [], 0, False
        for job in queued:
            if job.key != first.key or job.solo:
                continue
            if rows + job.rows > room:
                full = True
                break
            batch.append(job.id)
            rows += job.rows
        if not batch:  # the oldest job alone needs more rows than a batch may hold: it runs alone
            return Plan((first.id,))
        if not full and rows < room:
            remaining = first.created_at + self.batch_wait_s - now
            if remaining > 0:
                return Plan(wait_s=remaining)
        return Plan(tuple(batch))

    def _room(self, key: Hashable, capacity: Mapping[Hashable, int] | None) -> int:
        return min(self.max_batch, capacity.get(key, self.max_batch)) if capacity else self.max_batch

    def _joiners(self, queued: Sequence[QueuedJob], running: RunningBatch, limit: int) -> Plan:
        """The oldest queued jobs of the running batch's key that keep it within ``limit`` rows (and the
        step-cost bound), stopping at the first job that cannot join, so that no later arrival overtakes it."""
        taken: list[str] = []
        rows = running.size
        for job in queued:
            if rows + job.rows > limit or job.key != running.key or job.solo:
                break
            if self.step_cost is not None and not self.step_cost.allows(running.key, rows + job.rows):
                return Plan(tuple(taken), held_by_cost=True)
            taken.append(job.id)
            rows += job.rows
        return Plan(tuple(taken))

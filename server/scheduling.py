"""The batching policy: which queued jobs start or join the running batch, and when. No torch.

The engine asks :meth:`BatchingPolicy.plan` at every step boundary, with the queue (oldest first)
and what runs; the answer is the jobs to admit now, or how long an idle engine may wait for more.

* With nothing running (both modes), the oldest queued job fixes the key and up to ``max_batch``
  queued jobs with that key start together, once the batch is full or the oldest job has waited
  ``batch_wait_s`` since it arrived.
* ``static``: the key is (model, checkpoint, size, frames, *steps*) and a batch is fixed when it starts.
* ``continuous``: the key drops the step count (each sample carries its own schedule), and queued
  jobs join a running batch of their key at the next step boundary, up to ``max_batch`` samples, as
  finished and cancelled samples free their slots.

Fairness is FIFO in both: jobs are considered oldest first and admission stops at the first queued job
that cannot join (another key), so a stream of same-key arrivals never overtakes an older job of
another key; once the running batch drains, that job starts the next one. A job marked ``solo`` (its
batch failed, so it is retried alone to find the culprit) never shares a batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

BatchingMode = Literal["static", "continuous"]
BATCHING_MODES: tuple[str, ...] = ("static", "continuous")


def batch_key(params: Mapping[str, Any], mode: BatchingMode, steppable: bool = True) -> tuple:
    """What jobs must share to run as one batch. Guidance (weights, strength, window, mode, particles),
    prompts, seeds and CFG scales are per sample; in continuous mode so is the step count, unless the
    model's scheduler keeps batched history (``steppable`` False: its samples step together)."""
    judge = (params.get("reward_guidance") or {}).get("judge")  # a judge-ranked search runs with the judge as reward
    key = (params["model"], params.get("checkpoint"), params["width"], params["height"], params["num_frames"], judge)
    return key if mode == "continuous" and steppable else (*key, params["num_inference_steps"])


@dataclass(frozen=True)
class QueuedJob:
    id: str
    key: Hashable
    created_at: float
    solo: bool = False


@dataclass(frozen=True)
class RunningBatch:
    key: Hashable
    size: int
    #: Whether samples may join between steps (False for multistep schedulers and solo retries).
    joinable: bool


@dataclass(frozen=True)
class Plan:
    """Jobs to admit now (start a batch, or join the running one), else ``wait_s``: how long an idle
    engine may wait for the batch to fill before asking again (None: nothing to wait for)."""

    admit: tuple[str, ...] = ()
    wait_s: float | None = None


class BatchingPolicy:
    def __init__(self, mode: BatchingMode = "continuous", max_batch: int = 4, batch_wait_s: float = 0.05) -> None:
        if mode not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {', '.join(BATCHING_MODES)}; got {mode!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        if batch_wait_s < 0:
            raise ValueError(f"batch_wait must be >= 0; got {batch_wait_s}")
        self.mode = mode
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s

    def key(self, params: Mapping[str, Any], steppable: bool = True) -> tuple:
        return batch_key(params, self.mode, steppable)

    def plan(self, queued: Sequence[QueuedJob], running: RunningBatch | None, now: float) -> Plan:
        """``queued`` oldest first; ``running`` None when no batch runs."""
        if not queued:
            return Plan()
        if running is not None and running.size > 0:
            if self.mode == "static" or not running.joinable:
                return Plan()
            return Plan(self._compatible(queued, running.key, self.max_batch - running.size))
        first = queued[0]
        if first.solo:
            return Plan((first.id,))
        # Starting a batch, the oldest job has fixed the key: its batch-mates may be anywhere behind.
        batch = tuple(job.id for job in queued if job.key == first.key and not job.solo)[: self.max_batch]
        if len(batch) < self.max_batch:
            remaining = first.created_at + self.batch_wait_s - now
            if remaining > 0:
                return Plan(wait_s=remaining)
        return Plan(batch)

    @staticmethod
    def _compatible(queued: Sequence[QueuedJob], key: Hashable, room: int) -> tuple[str, ...]:
        """Joiners: the oldest queued jobs with ``key``, up to ``room``, stopping at the first job that
        cannot join, so that no later arrival overtakes it."""
        taken: list[str] = []
        for job in queued:
            if len(taken) >= room or job.key != key or job.solo:
                break
            taken.append(job.id)
        return tuple(taken)

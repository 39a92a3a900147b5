"""Measured seconds per sample of a running batch, and what one unguided row of it would have cost.

A sample's compute is not its denoiser passes: a gradient-guided row takes one pass per step like an
unguided one, then a reward forward and backward per guided step, which can cost more than the pass.
So each timed call is charged to the rows it served, split evenly: a denoiser call (cond, and uncond
for the CFG rows) over its rows, a reward chunk's forward and backward over the guided rows it
differentiated, a particle scoring over the particles scored, a decode over the rows decoded. A
sample's ``total`` is its rows' shares (a search sample's particles each). Its ``unguided`` reference
is what one unguided row of it cost in the same calls: one row's share of every denoiser call it was
in, and its decode; an unguided sample's total is exactly its reference.

On CUDA the calls are timed with events, read when a sample's seconds are taken (after the step's one
host read, as ``guidance.timing.PhaseTimer`` does), so timing adds no sync per call. Elsewhere the ops
run synchronously and a clock is exact, though on a busy machine it also counts the waits for a core.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from guidance.timing import DeferredClock


@dataclass
class RowSeconds:
    """One sample's measured seconds."""

    #: Its rows' shares of every timed call they were in.
    total: float = 0.0
    #: What one unguided row of it cost in the same calls: its denoiser passes' share and its decode.
    unguided: float = 0.0

    @property
    def vs_unguided(self) -> float | None:
        """``total / unguided``: 1 for an unguided sample, more for what guidance added; None if nothing
        an unguided row does was timed (no step taken)."""
        return self.total / self.unguided if self.unguided > 0 else None


#: Per sample, the fractions of a call's time charged to its total and to its unguided reference.
Shares = dict[Hashable, tuple[float, float]]


class RowClock:
    """Charges timed calls to the samples whose rows they served (module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self._seconds: dict[Hashable, RowSeconds] = {}
        self._clock = DeferredClock[Shares](device, self._add)
        #: Seconds of every call timed so far, whoever they were charged to.
        self._timed = 0.0

    @contextmanager
    def charge(self, ids: Sequence[Hashable], unguided_rows: Mapping[Hashable, int] | None = None) -> Iterator[None]:
        """Time the block and charge it evenly to the rows it served: ``ids`` holds a sample's id once per
        row of it in the call. ``unguided_rows``: the block is work an unguided row does too (a denoiser
        call, a decode), and maps each sample to its rows in the batch at the time, so that its unguided
        reference gets one row's share (its particles' shares averaged); None: work guidance alone does."""
        if not ids:
            yield
            return
        per_row = 1.0 / len(ids)
        shares: Shares = {}
        for sid, count in Counter(ids).items():
            self._seconds.setdefault(sid, RowSeconds())
            reference = 0.0 if unguided_rows is None else count * per_row / unguided_rows[sid]
            shares[sid] = (count * per_row, reference)
        with self._clock.time(shares):
            yield

    def take(self, ids: Sequence[Hashable]) -> list[RowSeconds]:
        """The seconds of these samples, which leave the clock (waits for their recorded events)."""
        self._clock.settle()
        return [self._seconds.pop(sid, RowSeconds()) for sid in ids]

    def drop(self, ids: Sequence[Hashable]) -> None:
        """Forget samples that left without a result (cancelled)."""
        self._clock.settle()
        for sid in ids:
            self._seconds.pop(sid, None)

    @property
    def timed_s(self) -> float:
        """Seconds of every call timed so far: what the totals of every sample charged add up to, the
        ones taken, dropped or still running included."""
        self._clock.settle()
        return self._timed

    def _add(self, shares: Shares, seconds: float) -> None:
        self._timed += seconds
        for sid, (total, reference) in shares.items():
            row = self._seconds.get(sid)
            if row is not None:  # not dropped meanwhile
                row.total += total * seconds
                row.unguided += reference * seconds

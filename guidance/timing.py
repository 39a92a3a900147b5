"""Seconds spent per phase of a batch (encode, denoise, guidance, decode) without a sync per phase.

On a GPU, work is queued, so a wall clock read after a phase measures the queueing, not the phase,
unless the host waits for the device, and waiting every step costs throughput. CUDA events are
recorded in the stream instead and read only when the totals are asked for (by then the step's one
host read has already waited for them). Elsewhere the ops run synchronously and a clock is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Generic, TypeVar

import torch

PHASES = ("encode_s", "denoise_s", "guidance_s", "decode_s")

K = TypeVar("K")


class DeferredClock(Generic[K]):
    """Times blocks without a host sync per block: each block's seconds reach ``record(key, seconds)``,
    at once off a GPU, and on CUDA when :meth:`settle` reads the events recorded around it."""

    def __init__(self, device: torch.device, record: Callable[[K, float], None]) -> None:
        self.cuda = device.type == "cuda"
        self._record = record
        self._pending: list[tuple[K, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def time(self, key: K) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((key, start, end))
        else:
            began = time.perf_counter()
            yield
            self._record(key, time.perf_counter() - began)

    def settle(self) -> None:
        """Record every block timed on CUDA so far (waits for its events, which a step's read already did)."""
        for key, start, end in self._pending:
            end.synchronize()
            self._record(key, start.elapsed_time(end) / 1000.0)
        self._pending.clear()


class PhaseTimer:
    def __init__(self, device: torch.device) -> None:
        self._totals = dict.fromkeys(PHASES, 0.0)
        self._clock = DeferredClock[str](device, self._add)

    def phase(self, name: str) -> AbstractContextManager[None]:
        return self._clock.time(name)

    def totals(self) -> dict[str, float]:
        """Seconds per phase so far."""
        self._clock.settle()
        return dict(self._totals)

    def _add(self, name: str, seconds: float) -> None:
        self._totals[name] += seconds

"""Seconds spent per phase of a batch (encode, denoise, guidance, decode) without a sync per phase.

On a GPU, work is queued, so a wall clock read after a phase measures the queueing, not the phase,
unless the host waits for the device, and waiting every step costs throughput. CUDA events are
recorded in the stream instead and read only when the totals are asked for (by then the step's one
host read has already waited for them). Elsewhere the ops run synchronously and a clock is exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PHASES = ("encode_s", "denoise_s", "guidance_s", "decode_s")


class PhaseTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._totals = dict.fromkeys(PHASES, 0.0)
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((name, start, end))
        else:
            began = time.perf_counter()
            yield
            self._totals[name] += time.perf_counter() - began

    def totals(self) -> dict[str, float]:
        """Seconds per phase so far (waits for the recorded events, which a step's read already did)."""
        for name, start, end in self._pending:
            end.synchronize()
            self._totals[name] += start.elapsed_time(end) / 1000.0
        self._pending.clear()
        return dict(self._totals)

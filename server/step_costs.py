"""Step times learnt online, per batch key and rows: what a newcomer would cost the batch it joins. No torch.

Continuous batching lets a queued job join the running batch at the next step. On a device where a step's
time grows with the rows (a CPU: one demo-model step takes ~60 ms at 1 row and ~155 ms at 4), every join
slows every running job, and that can eat the queue time it saved. ``nrg serve --max-step-slowdown F``
admits a newcomer only while the batch's predicted step time stays within ``F`` times the learnt time of
one row alone, for the same model and shape (the continuous batch key): the cost of joining is bounded,
and the bound comes from this machine's own measurements, not from a constant that differs per device.

* Each step of a batch is observed as (key, rows, seconds); a key's time at a row count is an exponential
  moving average of its steps at that count, so a drifting load or a new mix of guided rows moves it.
* A row count not seen yet is predicted from those seen: a least-squares line ``a + b * rows`` over the
  averaged counts (with ``a`` and ``b`` kept non-negative: a step never gets cheaper with more rows), or,
  with one count seen, proportionally to it (pessimistic where steps have a fixed cost).
* A key with nothing learnt predicts nothing, and the policy admits by rows alone until its first steps are
  measured.
"""

from __future__ import annotations

from collections.abc import Hashable

#: Weight of the newest step in a row count's moving average: about the last ten steps count.
SMOOTHING = 0.2


class StepTimes:
    """Per batch key, the moving-average seconds of one step at each row count observed."""

    def __init__(self, smoothing: float = SMOOTHING) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1]; got {smoothing}")
        self.smoothing = smoothing
        self._seconds: dict[Hashable, dict[int, float]] = {}

    def observe(self, key: Hashable, rows: int, seconds: float) -> None:
        """One step of a batch of ``key`` with ``rows`` rows took ``seconds``."""
        if rows < 1 or not seconds > 0:
            return
        by_rows = self._seconds.setdefault(key, {})
        old = by_rows.get(rows)
        by_rows[rows] = seconds if old is None else old + self.smoothing * (seconds - old)

    def predict(self, key: Hashable, rows: int) -> float | None:
        """Seconds of one step of ``key`` at ``rows`` rows; None while nothing of ``key`` was observed."""
        by_rows = self._seconds.get(key)
        if not by_rows:
            return None
        if rows in by_rows:
            return by_rows[rows]
        if len(by_rows) == 1:
            (seen, seconds), = by_rows.items()
            return seconds * rows / seen
        intercept, slope = _line(by_rows)
        return intercept + slope * rows


def _line(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``seconds = a + b * rows`` with both non-negative (two or more counts)."""
    n = len(points)
    mean_x = sum(points) / n
    mean_y = sum(points.values()) / n
    sxx = sum((x - mean_x) ** 2 for x in points)
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points.items()) / sxx)
    intercept = mean_y - slope * mean_x
    if intercept < 0:  # refit through the origin: the best line with no fixed cost
        slope = sum(x * y for x, y in points.items()) / sum(x * x for x in points)
        intercept = 0.0
    return intercept, slope


class StepCostGate:
    """Whether a running batch may grow to a row count: its predicted step time within ``max_slowdown``
    times the key's predicted time at one row. Unknown keys (nothing observed yet) may grow."""

    def __init__(self, times: StepTimes, max_slowdown: float) -> None:
        if not max_slowdown >= 1:
            raise ValueError(f"max_step_slowdown must be >= 1 (a step may not get faster by growing); got {max_slowdown}")
        self.times = times
        self.max_slowdown = max_slowdown

    def allows(self, key: Hashable, rows: int) -> bool:
        alone = self.times.predict(key, 1)
        grown = self.times.predict(key, rows)
        if alone is None or grown is None:
            return True
        return grown <= self.max_slowdown * alone

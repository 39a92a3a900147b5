"""Paired win-rate statistics of an evaluation: counts, a confidence interval and a sign test.

A guided clip and the unguided clip of the same prompt and seed form a pair. A pair is decisive when
their scores differ by at least the objective's tie margin; ties carry no information about the
direction and are left out, as a sign test leaves out zero differences. Pure Python (``math`` only),
so the figures can be checked by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Two-sided 95% normal quantile, for the Wilson interval.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class WinRate:
    """Wins and losses of decisive pairs, ties, and what they support."""

    wins: int
    losses: int
    ties: int

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def rate(self) -> float | None:
        return self.wins / self.decisive if self.decisive else None

    def interval(self) -> tuple[float, float] | None:
        """The 95% Wilson score interval of the win rate (sound at small counts and near 0 or 1)."""
        return wilson_interval(self.wins, self.decisive)

    def p_value(self) -> float | None:
        """Two-sided exact sign test of "guidance does not change the objective" (p = 1/2)."""
        return sign_test(self.wins, self.losses) if self.decisive else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "decisive": self.decisive, "rate": self.rate,
                "ci95": None if self.interval() is None else list(self.interval()), "p_value": self.p_value()}


def win_rate(differences: list[float], margin: float) -> WinRate:
    """Count the pairs whose guided-minus-unguided difference is at least ``margin`` either way; an exact
    tie is a tie whatever the margin (at margin 0 it would otherwise count as a win and a loss)."""
    wins = sum(1 for d in differences if d > 0 and d >= margin)
    losses = sum(1 for d in differences if d < 0 and d <= -margin)
    return WinRate(wins, losses, len(differences) - wins - losses)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    if trials == 0:
        return None
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` successes in ``wins + losses`` fair coin flips."""
    n, k = wins + losses, min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)

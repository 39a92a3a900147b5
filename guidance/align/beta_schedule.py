"""The names of Flow-DPO's beta_t schedules, torch-free so that ``nrg align --help`` can list them.

``constant``: beta_t = beta. ``paper-t``: beta_t = beta (1 - t)^2, which puts little weight on high
noise levels. :func:`guidance.align.losses.beta_at` computes them.
"""

from __future__ import annotations

from typing import Literal

BetaSchedule = Literal["constant", "paper-t"]
BETA_SCHEDULES: tuple[str, ...] = ("constant", "paper-t")

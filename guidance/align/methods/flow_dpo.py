"""Flow-DPO (``--method flow-dpo``), the options that compose with its pair loss (IS-DAA, TVKD,
Diff-UAPA), and ABC (``--method abc``), which classifies the same pairs with the same forward passes.

The composable options are declared once, here; each method whose loss has a Flow-DPO pair term
lists them among its options (Flow-DPO, SPRO, hybrid), and giving one with any other method is an
error (:meth:`guidance.align.config.AlignConfig.validate`). Their tasks: :mod:`.flow_dpo_task`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guidance.align.methods.base import Method, Options, option


@dataclass(frozen=True)
class IsDaaOptions(Options):
    """IS-DAA: the pair loss times a clipped, stop-gradient importance weight (the over-optimisation guard)."""

    title = "IS-DAA, on the Flow-DPO pair loss"
    switch = "is_clip"
    is_clip: float | None = option(
        None, "IS-DAA: multiply the pair loss by sg(exp(min(l(w) + l(l), 2 EPS))) (paper default 0.25)",
        (lambda v: v >= 0 and math.isfinite(v), ">= 0"), type=float, metavar="EPS")
    is_kappa: float | None = option(None, "IS-DAA: l(x) = -(kappa / 2) D(x) (default: beta)", (lambda v: v > 0, "> 0"),
                                    type=float)

    def validate(self) -> None:
        super().validate()
        if self.is_kappa is not None and self.is_clip is None:
            raise ValueError("--is-kappa needs --is-clip (it scales IS-DAA's log-ratio)")


@dataclass(frozen=True)
class TvkdOptions(Options):
    """TVKD: a teacher's value of the noisy latents shapes the pair margin."""

    title = "TVKD, on the Flow-DPO pair loss"
    switch = "teacher"
    teacher: str | None = option(None, "TVKD: a latent reward model whose score of x_t is the teacher's value Phi",
                                 type=str, metavar="REWARD_DIR")
    tvkd_alpha: float = option(1.0, "TVKD shaping weight (default %(default)g)",
                               (lambda v: v >= 0 and math.isfinite(v), ">= 0"))
    tvkd_gamma: float = option(0.9, "TVKD discount (default %(default)g)", (lambda v: 0 <= v <= 1, "in [0, 1]"))

    def validate(self) -> None:
        super().validate()
        if self.teacher is None and self != TvkdOptions():
            raise ValueError("--tvkd-alpha / --tvkd-gamma need --teacher REWARD_DIR (the teacher's value)")


@dataclass(frozen=True)
class UapaOptions(Options):
    """Diff-UAPA: a Beta-MAP term from the votes of several annotator groups."""

    title = "Diff-UAPA, on the Flow-DPO pair loss"
    switch = "uapa_map_ratio"
    uapa_map_ratio: float | None = option(
        None, "Diff-UAPA: weight of the Beta-MAP term from the annotator groups' votes (paper 0.25)",
        (lambda v: v >= 0, ">= 0"), type=float)


FLOW_DPO = Method("flow-dpo", data="pairs", options=(IsDaaOptions, TvkdOptions, UapaOptions),
                  task="guidance.align.methods.flow_dpo_task:build_flow_dpo")
#: ABC takes Flow-DPO's --beta and --beta-schedule (shared settings) and no options of its own.
ABC = Method("abc", data="pairs", options=(), task="guidance.align.methods.flow_dpo_task:build_abc")

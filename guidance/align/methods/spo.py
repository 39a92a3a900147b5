"""SPO and GradSPO (``--method spo|gradspo``): step-wise preferences among the children of one SDE
step, ranked by a step-aware latent reward model. They share how the children and their pair are
made (:class:`StepPairOptions`) and differ in the loss on that pair. Their tasks: :mod:`.spo_task`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from guidance.align.methods.base import Method, Options, option
from guidance.align.methods.shared import OnlineOptions, RewardModelOptions

if TYPE_CHECKING:
    from guidance.align.config import AlignConfig


@dataclass(frozen=True)
class StepPairOptions(Options):
    title = "SPO / GradSPO step pairs"
    spo_children: int = option(4, "SPO children per x_t (default %(default)s)", (lambda v: v >= 2, ">= 2"))
    spo_threshold: float = option(0.0, "SPO: softmax-probability gap a pair needs (default %(default)g)",
                                  (lambda v: 0 <= v < 1, "in [0, 1)"))
    spo_noise: float = option(0.7, "SDE noise level a (default %(default)g)", (lambda v: v > 0, "> 0"))


@dataclass(frozen=True)
class SpoOptions(Options):
    title = "SPO"
    spo_beta: float = option(10.0, "SPO beta (default %(default)g)", (lambda v: v > 0, "> 0"))
    spo_clip: float = option(0.1, "SPO ratio clamp eps (default %(default)g)", (lambda v: 0 < v < 1, "in (0, 1)"))


@dataclass(frozen=True)
class GradSpoOptions(Options):
    title = "GradSPO"
    gradspo_g: float = option(0.5, "GradSPO guidance scale g (default %(default)g)", (lambda v: v >= 0, ">= 0"))
    gradspo_ema: float = option(0.9, "GradSPO EMA decay (default %(default)g)", (lambda v: 0 <= v < 1, "in [0, 1)"))


def _needs_reward_model(config: AlignConfig) -> None:
    if config.option(RewardModelOptions).reward_model is None:
        raise ValueError(f"--method {config.method} needs --reward-model REWARD_DIR (the latent reward model that "
                         "scores each step's children)")


SPO = Method("spo", data="either", options=(StepPairOptions, SpoOptions, OnlineOptions, RewardModelOptions),
             task="guidance.align.methods.spo_task:build_spo", check=_needs_reward_model)
GRADSPO = Method("gradspo", data="either", options=(StepPairOptions, GradSpoOptions, OnlineOptions, RewardModelOptions),
                 task="guidance.align.methods.spo_task:build_gradspo", check=_needs_reward_model)

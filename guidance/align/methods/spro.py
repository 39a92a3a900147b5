"""SPRO (``--method spro``): self-play rounds; each round's best and worst samples of a prompt, by a
judge, become Flow-DPO pairs (so IS-DAA and TVKD compose). Its task: :mod:`.spro_task`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from guidance.align.methods.base import Method, Options, option
from guidance.align.methods.flow_dpo import IsDaaOptions, TvkdOptions
from guidance.align.methods.shared import OnlineOptions, RewardModelOptions

if TYPE_CHECKING:
    from guidance.align.config import AlignConfig

#: SPRO's judges (``--judge``): ``reward`` scores with ``--reward-model`` at t = 0; ``demo`` with the
#: frame judge the caller of the trainer passes (``nrg align`` passes the demo world's ground truth).
JUDGES: tuple[str, ...] = ("reward", "demo")


@dataclass(frozen=True)
class SproOptions(Options):
    title = "SPRO"
    rounds: int = option(2, "SPRO self-play rounds (default %(default)s)", (lambda v: v >= 1, ">= 1"))
    spro_samples: int = option(4, "SPRO clips per prompt and round (default %(default)s)", (lambda v: v >= 2, ">= 2"))
    judge: str = option("reward", "SPRO judge: the --reward-model at t = 0, or the demo world's ground truth "
                        "(default %(default)s)", (lambda v: v in JUDGES, " or ".join(JUDGES)), choices=JUDGES)


def _needs_a_judge(config: AlignConfig) -> None:
    if config.option(SproOptions).judge == "reward" and config.option(RewardModelOptions).reward_model is None:
        raise ValueError("--method spro needs --reward-model REWARD_DIR (the latent reward model that judges the "
                         "samples, or --judge demo)")


SPRO = Method("spro", data="either", options=(SproOptions, OnlineOptions, RewardModelOptions, IsDaaOptions, TvkdOptions),
              task="guidance.align.methods.spro_task:build", check=_needs_a_judge,
              uses_frame_judge=lambda config: config.option(SproOptions).judge == "demo")

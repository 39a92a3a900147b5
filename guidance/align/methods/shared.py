"""Option groups that several methods take: online sampling, and the latent reward model that scores
samples. Torch-free, like every declaration (:mod:`guidance.align.methods.base`)."""

from __future__ import annotations

from dataclasses import dataclass

from guidance.align.methods.base import Options, option


@dataclass(frozen=True)
class OnlineOptions(Options):
    """How the methods that sample from the model while training sample (unguided, no decode)."""

    title = "online sampling"
    online_steps: int = option(20, "sampler steps of online samples (default %(default)s)",
                               (lambda v: v >= 1, ">= 1"))
    online_cfg: float | None = option(None, "CFG scale of online samples (default: the model's)", type=float)


@dataclass(frozen=True)
class RewardModelOptions(Options):
    """A latent reward model (``nrg train-reward`` output) that scores the samples of a run."""

    title = "reward model"
    reward_model: str | None = option(None, "SPO / GradSPO: the step-aware scorer; SPRO: the judge with --judge reward",
                                      type=str, metavar="REWARD_DIR")

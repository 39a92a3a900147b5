"""What the sampler needs from a reward: named objectives and scores of noisy latents.

Two implementations: the learned :class:`guidance.reward_model.LatentRewardModel` and
:class:`CallableReward`, which wraps a plain function ``r(latents, t, prompt_embeds) -> [B, K]`` so
analytic rewards (tests, quick experiments) plug in with no training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from guidance.families.base import TextConditioning, VideoShape


@runtime_checkable
class RewardFunction(Protocol):
    """Scores noisy latents: ``latents`` [B, ...] in the family's latent layout, ``t`` float32 [B]
    noise levels in [0, 1] (1 = pure noise), ``shape`` the batch's video shape (packed layouts such
    as LTX-Video's need it); returns float [B, K] in the order of ``objectives``."""

    objectives: tuple[str, ...]

    def __call__(
        self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape
    ) -> torch.Tensor: ...


class CallableReward:
    """Adapts ``fn(latents, t, prompt_embeds) -> [B, K]`` to :class:`RewardFunction`."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        objectives: Sequence[str],
    ) -> None:
        if not objectives or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must be non-empty and unique; got {list(objectives)}")
        self.fn = fn
        self.objectives = tuple(objectives)

    def __call__(
        self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape
    ) -> torch.Tensor:
        scores = self.fn(latents, t, cond.embeds)
        expected = (latents.shape[0], len(self.objectives))
        if tuple(scores.shape) != expected:
            raise ValueError(f"reward function returned shape {tuple(scores.shape)}; expected {expected}")
        return scores


def reward_and_gradients(
    reward: RewardFunction,
    latents: torch.Tensor,
    t: torch.Tensor,
    cond: TextConditioning,
    shape: VideoShape,
    weights: torch.Tensor,
    mode: str,
    used: Sequence[bool] | None = None,
    weighted: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [B, K] and the gradients the guided step combines.

    ``"sum"`` mode: one backward pass of sum_b sum_k w_bk r_bk (the paper; by linearity the same as
    weighting per-objective gradients) giving [B, 1, ...], to be used with unit weights. Samples are
    scored independently, so each sample's gradient is that of its own weighted reward.
    ``"relative"`` and ``"unit"`` modes: per-objective gradients [B, K, ...], normalised and weighted by
    the kernel. ``used[k]`` False (no sample weights objective k) leaves objective k's gradient zero,
    which the kernel never reads behind a zero weight.

    ``weighted[b]`` (the objectives row b weights, from the host) lets those gradients come from
    fewer backward passes: rows are scored independently, so pass j takes the gradient of
    sum_b r_{b, weighted[b][j]}, which gives every row its j-th objective's gradient at once. A batch
    whose rows each weight one objective then costs one backward pass, however many objectives the
    batch uses; without ``weighted``, one pass per used objective.
    """
    x = latents.detach().float().requires_grad_(True)
    with torch.enable_grad():
        scores = reward(x, t, cond.detach(), shape).float()
        if mode == "sum":
            (grad,) = torch.autograd.grad((scores * weights).sum(), x, allow_unused=True, materialize_grads=True)
            return scores.detach(), grad.unsqueeze(1)
        num = scores.shape[1]
        if weighted is None:
            needed = [k for k in range(num) if used is None or used[k]]
            weighted = [needed] * x.shape[0]
        passes = max((len(ks) for ks in weighted), default=0)
        grads = torch.zeros((x.shape[0], num, *x.shape[1:]), dtype=x.dtype, device=x.device)
        for j in range(passes):
            pairs = [(row, ks[j]) for row, ks in enumerate(weighted) if j < len(ks)]
            pick = torch.zeros_like(scores)
            rows = torch.tensor([row for row, _ in pairs], device=x.device)
            objectives = torch.tensor([k for _, k in pairs], device=x.device)
            pick[rows, objectives] = 1.0
            (grad,) = torch.autograd.grad((scores * pick).sum(), x, retain_graph=j < passes - 1, allow_unused=True,
                                          materialize_grads=True)
            grads[rows, objectives] = grad[rows]
    return scores.detach(), grads

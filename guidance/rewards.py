"""What the sampler needs from a reward: named objectives and scores of noisy latents.

Two implementations: the learned :class:`guidance.reward_model.LatentRewardModel` and
:class:`CallableReward`, which wraps a plain function ``r(latents, t, prompt_embeds) -> [B, K]`` so
analytic rewards (tests, quick experiments) plug in with no training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from guidance.families.base import TextConditioning, VideoShape


@runtime_checkable
class RewardFunction(Protocol):
    """Scores noisy latents: ``latents`` [B, ...] in the family's latent layout, ``t`` float32 [B]
    noise levels in [0, 1] (1 = pure noise), ``shape`` the batch's video shape (packed layouts such
    as LTX-Video's need it); returns float [B, K] in the order of ``objectives``.

    Two optional attributes, read with ``getattr``: ``differentiable``, the objectives with a useful
    gradient, which are all of them when it is absent (the gradient modes may weight no other:
    ``guidance.batch_state.check_specs``); ``decodes``, true when scoring a row decodes its clean
    estimate (a judge's), a cost the batch counts per sample (``SampleResult.guidance_decodes``)."""

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


class RowByRowReward:
    """A reward that scores one row per call, so a row's score cannot depend on how many rows share
    the call (a BLAS may pick its blocking, and so its rounding, by the number of rows)."""

    def __init__(self, reward: RewardFunction) -> None:
        self.reward = reward
        self.objectives = reward.objectives

    def __call__(
        self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape
    ) -> torch.Tensor:
        return torch.cat([self.reward(latents[row:row + 1], t[row:row + 1], cond.select([row]), shape)
                          for row in range(latents.shape[0])])


#: Rows scored and differentiated together in one reward backward on a GPU. Rows are scored
#: independently, so chunking is exact; one row per chunk keeps the backward's memory at one row's
#: whatever the batch (what the admission estimate of ``guidance.memory`` counts).
DEFAULT_CHUNK_ROWS = 1
#: A chunk size no batch reaches: every guided row in one backward.
WHOLE_BATCH = 2**31 - 1


def default_chunk_rows(reward: RewardFunction | None, device: torch.device, memory_bounded: bool = False) -> int:
    """Rows per reward backward when the caller does not choose: one on a GPU or under a memory budget
    (``memory_bounded``), where the backward's memory is what limits a batch; the whole batch on a CPU,
    where host memory is not budgeted and a backward per row costs several times one batched backward
    (small matrices use the cores badly). A reward may cap it (``max_chunk_rows``: a judge's graph
    holds a VAE decoder's activations per row)."""
    if device.type == "cuda" or memory_bounded:
        return DEFAULT_CHUNK_ROWS
    return getattr(reward, "max_chunk_rows", None) or WHOLE_BATCH


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
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    timed: Callable[[Sequence[int]], AbstractContextManager[object]] | None = None,
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

    The rows go through forward and backward ``chunk_rows`` at a time, each chunk's graph freed before
    the next: the autograd graph of a video reward holds gigabytes per row, and independence of the rows
    makes every chunk's gradients exactly those of the whole batch's graph.

    ``timed(rows)``, if given, is entered around each chunk's forward and backward with the chunk's rows
    (positions in ``latents``): the caller charges each row its chunk's time (``guidance.row_time``).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1; got {chunk_rows}")
    batch = latents.shape[0]
    if weighted is None and mode != "sum":
        needed = [k for k in range(len(reward.objectives)) if used is None or used[k]]
        weighted = [needed] * batch
    around = timed or (lambda rows: nullcontext())
    if batch <= chunk_rows:
        with around(range(batch)):
            return _chunk_gradients(reward, _Chunk(latents, t, cond, weights, weighted), shape, mode)
    scores, grads = [], []
    for start in range(0, batch, chunk_rows):
        part = slice(start, start + chunk_rows)
        rows = list(range(start, min(batch, start + chunk_rows)))
        chunk = _Chunk(latents[part], t.reshape(-1).expand(batch)[part], cond.select(rows), weights[part],
                       None if weighted is None else weighted[part])
        with around(rows):
            s, g = _chunk_gradients(reward, chunk, shape, mode)
        scores.append(s)
        grads.append(g)
    return torch.cat(scores), torch.cat(grads)


@dataclass(frozen=True)
class _Chunk:
    """The rows of one forward and backward: their latents, noise levels, conditioning, objective weights
    and (per row) the objectives it weights."""

    latents: torch.Tensor
    t: torch.Tensor
    cond: TextConditioning
    weights: torch.Tensor
    weighted: Sequence[Sequence[int]] | None


def _chunk_gradients(
    reward: RewardFunction, chunk: _Chunk, shape: VideoShape, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`reward_and_gradients` of rows that share one graph."""
    weighted = chunk.weighted
    x = chunk.latents.detach().float().requires_grad_(True)
    with torch.enable_grad():
        scores = reward(x, chunk.t, chunk.cond.detach(), shape).float()
        if mode == "sum":
            (grad,) = torch.autograd.grad((scores * chunk.weights).sum(), x, allow_unused=True,
                                          materialize_grads=True)
            return scores.detach(), grad.unsqueeze(1)
        num = scores.shape[1]
        passes = max((len(ks) for ks in weighted), default=0)
        grads = torch.zeros((x.shape[0], num, *x.shape[1:]), dtype=x.dtype, device=x.device)
        for j in range(passes):
            # Python indices only: building index tensors would cost a host-to-device copy per pass.
            pairs = [(row, ks[j]) for row, ks in enumerate(weighted) if j < len(ks)]
            objective = torch.stack([scores[row, k] for row, k in pairs]).sum()
            (grad,) = torch.autograd.grad(objective, x, retain_graph=j < passes - 1, allow_unused=True,
                                          materialize_grads=True)
            for row, k in pairs:
                grads[row, k] = grad[row]
    return scores.detach(), grads

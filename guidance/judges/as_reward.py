"""A judge as a reward of noisy latents: its verdict on the decoded clean estimate.

The judge scores x0 = x_t - t v(x_t, t) of flow-matching models (``PipelineFamily.clean_estimate``:
one extra denoiser pass, cond only), decoded by the pipeline's VAE, with the prompt's text
(``TextConditioning.texts``). It serves two kinds of modes:

- **ranking** (``best_of_n`` and ``fk`` particles, the final scores): called with grad mode off, or on
  latents that need no gradient, it builds no graph, as Video-T1, EvoSearch and LatSearch rank
  candidates;
- **gradient** (``relative``, ``sum``, ``unit``): ``guidance.rewards.reward_and_gradients`` calls it on
  latents that require a gradient, which then runs back through the judge, the VAE decoder and the
  denoiser's clean estimate. Only the judge's ``differentiable`` objectives may be weighted there
  (``guidance.nrg.check_gradient_objectives``, applied by ``guidance.batch_state.check_specs``).

Memory of the gradient: ``reward_and_gradients`` differentiates one row per chunk by default and this
reward decodes a row at a time, so the device holds one row's graph: the denoiser's activations, the
decoder's and the judge's. The decoder's dominate: about 22 KB per output pixel and frame for Wan 2.1's
float32 VAE (saved tensors measured on its configuration), some 700 GB for an 81-frame 480 x 832 clip,
against about 60 GB for the 1.3B denoiser's in bfloat16 (``guidance.memory``'s per-block figures). The pipeline's
weights are held as constants while the graph is built, so autograd keeps no layer input for a weight
gradient nobody asks for (a sixth of the decoder's saved bytes). ``torch.utils.checkpoint`` is not
used: a checkpointed segment (the denoiser, the decoder) is recomputed whole during the backward, so
the peak stays at least the decoder's graph; checkpointing the denoiser would save only its share
(under a tenth at Wan's shapes) for another denoiser pass per guided step, and Wan's VAE has no
checkpointing inside its decoder. Gradient guidance by a judge therefore fits short, small clips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.judges.base import DEFAULT_FPS, Judge


@contextmanager
def constant_weights(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """The modules' parameters need no gradient while a graph is built through them, and afterwards
    need one again if they did. The graph records what it saves when it is built, so its backward
    with respect to its input is unchanged, and it holds no layer inputs for weight gradients."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class JudgeReward:
    """:class:`guidance.rewards.RewardFunction` over noisy latents, from a judge of decoded frames."""

    #: Each row it scores costs a VAE decode (``guidance.batch_state.BatchState`` counts them).
    decodes = True
    #: A gradient holds a VAE decoder's activations per row (gigabytes at video sizes): one row per backward.
    max_chunk_rows = 1

    def __init__(self, family: PipelineFamily, judge: Judge, fps: float = DEFAULT_FPS) -> None:
        if family.prediction != "flow":
            raise ValueError(f"a judge scores the clean estimate of flow-matching models (x0 = x_t - t v); "
                             f"{family.name} predicts {family.prediction}")
        self.family, self.judge, self.fps = family, judge, fps
        self.objectives = tuple(judge.objectives)
        #: The objectives a gradient mode may weight: those the judge differentiates.
        self.differentiable = frozenset(judge.differentiable) & frozenset(self.objectives)

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning,
                 shape: VideoShape) -> torch.Tensor:
        if len(cond.texts) != latents.shape[0]:
            raise ValueError("a judge needs the prompts' text: the conditioning carries none (build it with "
                             "guidance.batch_state.BatchState, which records it)")
        if torch.is_grad_enabled() and latents.requires_grad:
            with constant_weights([*self.family.denoisers, self.family.pipe.vae]):
                frames = self._frames(latents, t, cond, shape, self.family.decode_with_grad)
        else:
            with torch.no_grad():
                frames = self._frames(latents, t, cond, shape, self.family.decode)
        return self.judge.score(frames, list(cond.texts), self.fps).float().to(latents.device)

    def score_frames(self, frames: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        """The judge's scores of decoded final videos ([B, F, H, W, 3]) with their prompts' text: the
        steered batch scores the frames it returns this way instead of decoding its latents again."""
        return self.judge.score(frames, list(cond.texts), self.fps).float().to(frames.device)

    def _frames(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning, shape: VideoShape,
                decode: Callable[[torch.Tensor, VideoShape, list[torch.Generator]], torch.Tensor]) -> torch.Tensor:
        """The decoded clean estimate of every row, one row per decode (a video VAE's activations are
        gigabytes per row). Each row's decode-time noise, if its VAE adds any, comes from seed 0."""
        x0 = self.family.clean_estimate(latents, t, cond, shape).to(latents.dtype)
        return torch.cat([decode(x0[row:row + 1], shape, [torch.Generator(device=latents.device).manual_seed(0)])
                          for row in range(x0.shape[0])])

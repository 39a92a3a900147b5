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

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.judges.base import DEFAULT_FPS, Judge
from guidance.memory import SavedTensorBytes

#: Output pixels x frames a judge gradient's memory is measured at, at most (``probe_shape``): small enough to
#: take a moment on any device, large enough that the graph's fixed parts do not dominate.
PROBE_PIXEL_FRAMES = 64 * 64 * 9
#: Frames of the probe, at least (or the video's, if fewer): what a judge of motion needs to score at all.
PROBE_MIN_FRAMES = 5


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

    def gradient_graph_bytes(self, shape: VideoShape) -> int:
        """Bytes autograd holds for one row's gradient at ``shape`` (the pipeline's weights not counted):
        measured on one row at :func:`probe_shape` (``guidance.memory.SavedTensorBytes``, the peak while the
        graph is built) and scaled by output pixels x frames, which the decoder's activations, the bulk of it,
        grow with. The admission estimate counts it for jobs guided by this judge's gradient; a judge that
        resizes frames to a fixed size (CLIP) grows slower than that, so the figure errs high there."""
        probe = probe_shape(self.family, shape)
        cond = self.family.stand_in_conditionings(probe, 1)[-1]
        latents = self.family.prepare_latents(probe, [torch.Generator("cpu").manual_seed(0)])
        latents = latents.float().requires_grad_()
        t = torch.full((1,), 0.5, device=latents.device)
        weights = [p for module in (*self.family.denoisers, self.family.pipe.vae) for p in module.parameters()]
        with torch.enable_grad(), SavedTensorBytes(exclude=weights) as saved:
            self(latents, t, cond, probe)
        return math.ceil(saved.peak * _pixel_frames(shape) / _pixel_frames(probe))

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


def _pixel_frames(shape: VideoShape) -> int:
    return shape.height * shape.width * shape.frames


def probe_shape(family: PipelineFamily, shape: VideoShape) -> VideoShape:
    """A small shape of the same model to measure a gradient's memory on: the fewest frames the model takes
    from ``PROBE_MIN_FRAMES`` (or the video's, if fewer), and the sides halved together while the result is
    a shape the model takes and above ``PROBE_PIXEL_FRAMES``."""
    frames = shape.frames
    for candidate in range(min(PROBE_MIN_FRAMES, shape.frames), shape.frames + 1):
        if _valid(family, VideoShape(shape.height, shape.width, candidate)):
            frames = candidate
            break
    probe = VideoShape(shape.height, shape.width, frames)
    while _pixel_frames(probe) > PROBE_PIXEL_FRAMES and probe.height % 2 == 0 and probe.width % 2 == 0:
        smaller = VideoShape(probe.height // 2, probe.width // 2, frames)
        if not _valid(family, smaller):
            break
        probe = smaller
    return probe


def _valid(family: PipelineFamily, shape: VideoShape) -> bool:
    try:
        family.check_shape(shape)
    except ValueError:
        return False
    return True

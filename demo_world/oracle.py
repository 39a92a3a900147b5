"""A differentiable oracle of the demo world's ground truth: the ceiling a learned reward aims at.

The metrics of ``metrics.py`` segment with thresholds, connected components and medians, so they have
no useful gradient. :func:`soft_metrics` computes the same three quantities from the same pixels
with every hard decision replaced by a smooth one; the thresholds themselves (background level,
contrast, bounding boxes) are measured on the clip and held constant, as a straight-through
estimator would, so the gradient flows through the pixel values only:

- foreground: ``m = sigmoid((v - b - C/2) / (EDGE C))`` instead of ``v > b + C/2`` and the largest
  component; presence per frame ``sigmoid((sum m - MIN_AREA) / 2)``;
- MQ: centroids of ``m`` grown by a pixel and weighted by the level above the background; travel from the presence-weighted least-squares slope; jerk, area CV and
  ``P M S K`` as in ``metrics.py``;
- VQ: the edge ratio ``sum g^2 / (C sum g)`` over the object's neighbourhood (``m`` max-pooled by
  ``BOX_MARGIN``) and the background's per-channel spread outside it;
- TA: the mean of three probabilities instead of three indicators: the foreground's mean colour
  against the world colours (softmax of cosine similarities of the centred RGB), the fill of the
  (measured) bounding box against the prompt's shape band, and the travel along the prompt's
  direction beyond ``MIN_TRAVEL`` and beyond the other directions.

:class:`OracleReward` makes it a :class:`guidance.rewards.RewardFunction` of noisy latents: the
denoiser's clean estimate ``x0 = x_t - t v(x_t, t)`` (flow matching) is decoded by the VAE, keeping
the graph when grad mode is on (``PipelineFamily.decode_with_grad``), and scored, with the gradient
taken through the denoiser and the decoder. It needs the prompt's words, which a reward sees only as
text embeddings: it encodes every prompt of the world once and reads each row's prompt as the nearest
embedding. It serves as the ceiling row of ``nrg eval --oracle`` and as the reference direction of the
gradient diagnostic (``demo_world.diagnose``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from demo_world import metrics as hard
from demo_world.world import COLORS, DIRECTIONS, Prompt, all_prompts, parse_prompt
from guidance.families.base import PipelineFamily, TextConditioning, VideoShape

#: Width of the soft foreground edge, as a share of the clip's contrast.
EDGE = 0.05
#: Temperature of the colour softmax over cosine similarities.
COLOR_TEMPERATURE = 0.1
#: Width (in fill units) of the soft shape bands.
FILL_WIDTH = 0.03
#: Width (in pixels) of the soft travel thresholds.
TRAVEL_WIDTH = 1.0

_COLOR_NAMES = tuple(COLORS)
_SHAPE_BANDS = {"square": (hard.FILL_SQUARE, None), "circle": (hard.FILL_TRIANGLE, hard.FILL_SQUARE),
                "triangle": (None, hard.FILL_TRIANGLE)}


def _centred(rgb: torch.Tensor) -> torch.Tensor:
    return F.normalize(rgb - rgb.mean(-1, keepdim=True), dim=-1, eps=1e-6)


def _weighted_slope(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of y [B, F, 2] against the frame index with weights w [B, F]."""
    f = torch.arange(y.shape[1], dtype=y.dtype, device=y.device)[None, :]
    sw = w.sum(1, keepdim=True).clamp(min=1e-6)
    fm = (w * f).sum(1, keepdim=True) / sw
    ym = (w[..., None] * y).sum(1, keepdim=True) / sw[..., None]
    cov = (w[..., None] * (f - fm)[..., None] * (y - ym)).sum(1)
    var = (w * (f - fm) ** 2).sum(1, keepdim=True).clamp(min=1e-6)
    return cov / var


def _shape_probability(fill: torch.Tensor, shape: str) -> torch.Tensor:
    lo, hi = _SHAPE_BANDS[shape]
    p = torch.ones_like(fill)
    if lo is not None:
        p = p * torch.sigmoid((fill - lo) / FILL_WIDTH)
    if hi is not None:
        p = p * torch.sigmoid((hi - fill) / FILL_WIDTH)
    return p


def soft_metrics(frames: torch.Tensor, prompts: Sequence[str | Prompt]) -> torch.Tensor:
    """Smooth VQ, MQ, TA [B, 3] of clips ``frames`` [B, F, H, W, 3] in [0, 1] (differentiable)."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [B, F, H, W, 3]; got {tuple(frames.shape)}")
    if len(prompts) != frames.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {frames.shape[0]} clips")
    clip = frames.float().clamp(0.0, 1.0)
    batch, n_frames, height, width, _ = clip.shape
    v = clip.amax(-1)
    flat = v.detach().flatten(1)
    b = flat.median(dim=1).values.view(-1, 1, 1, 1)
    contrast = (torch.quantile(flat, 0.995, dim=1).view(-1, 1, 1, 1) - b).clamp(min=hard.MIN_CONTRAST / 2)
    m = torch.sigmoid((v - b - contrast / 2) / (EDGE * contrast))
    area = m.sum((2, 3))
    presence = torch.sigmoid((area - hard.MIN_AREA) / 2.0)

    ys = torch.arange(height, dtype=clip.dtype, device=clip.device).view(1, 1, -1, 1) + 0.5
    xs = torch.arange(width, dtype=clip.dtype, device=clip.device).view(1, 1, 1, -1) + 0.5
    # As in metrics.py, centroids weigh the object grown by one pixel by the level above the background:
    # its anti-aliased edge then moves the centroid smoothly, and the flat background does not pull it.
    grown = F.max_pool2d(m.flatten(0, 1)[:, None], 3, stride=1, padding=1).view_as(m)
    w = grown * ((v - b) / contrast).clamp(0.0, 1.0)
    mass = w.sum((2, 3)).clamp(min=1e-3)
    centroid = torch.stack([(w * xs).sum((2, 3)) / mass, (w * ys).sum((2, 3)) / mass], dim=-1)
    d = _weighted_slope(centroid, presence) * (n_frames - 1)
    travel = d.norm(dim=-1).clamp(min=1e-6)
    move = torch.clamp(travel / hard.FULL_TRAVEL, max=1.0)
    acc = centroid[:, 2:] - 2 * centroid[:, 1:-1] + centroid[:, :-2]
    acc_w = presence[:, 2:] * presence[:, 1:-1] * presence[:, :-2]
    jerk = ((acc_w * (acc**2).sum(-1)).sum(1) / acc_w.sum(1).clamp(min=1e-6) + 1e-8).sqrt()
    area_mean = (presence * area).sum(1) / presence.sum(1).clamp(min=1e-6)
    area_var = (presence * (area - area_mean[:, None]) ** 2).sum(1) / presence.sum(1).clamp(min=1e-6)
    area_cv = (area_var + 1e-8).sqrt() / area_mean.clamp(min=1e-3)
    mq = presence.mean(1) * move * torch.exp(-jerk / hard.JERK_SCALE) * torch.exp(-area_cv / hard.AREA_CV_SCALE)

    near = F.max_pool2d(m.flatten(0, 1)[:, None], 2 * hard.BOX_MARGIN + 1, stride=1,
                        padding=hard.BOX_MARGIN).view_as(m)
    gx = F.pad(v[..., 1:] - v[..., :-1], (0, 1))
    gy = F.pad(v[..., 1:, :] - v[..., :-1, :], (0, 0, 0, 1))
    g = (gx**2 + gy**2 + 1e-8).sqrt()
    ratio = (near * g**2).sum((2, 3)) / (contrast.view(-1, 1) * (near * g).sum((2, 3)).clamp(min=1e-6))
    sharp = (presence * ratio).sum(1) / presence.sum(1).clamp(min=1e-6)
    far = (1.0 - near)[..., None]
    bg_n = far.sum((2, 3)).clamp(min=1.0)
    bg_mean = (far * clip).sum((2, 3)) / bg_n
    bg_var = (far * (clip - bg_mean[:, :, None, None]) ** 2).sum((2, 3)) / bg_n
    sigma = (bg_var + 1e-10).sqrt().mean((1, 2))
    vq = torch.clamp(sharp / hard.SHARP_REF, max=1.0) * torch.exp(-sigma / hard.NOISE_SCALE)

    parsed = [p if isinstance(p, Prompt) else parse_prompt(p) for p in prompts]
    fg = (m * presence[..., None, None])[..., None]
    mean_rgb = (fg * clip).sum((1, 2, 3)) / fg.sum((1, 2, 3)).clamp(min=1e-6)
    palette = _centred(torch.tensor([COLORS[c] for c in _COLOR_NAMES], dtype=clip.dtype, device=clip.device))
    color_p = torch.softmax(_centred(mean_rgb) @ palette.T / COLOR_TEMPERATURE, dim=-1)
    target_color = torch.tensor([_COLOR_NAMES.index(p.color) for p in parsed], device=clip.device)
    p_color = color_p.gather(1, target_color[:, None]).squeeze(1)

    solid = (m.detach() > 0.5).float()
    rows_on, cols_on = solid.amax(3), solid.amax(2)
    idx_h = torch.arange(height, device=clip.device, dtype=clip.dtype)
    idx_w = torch.arange(width, device=clip.device, dtype=clip.dtype)
    extent_h = ((rows_on * idx_h).amax(-1) - torch.where(rows_on > 0, idx_h, float(height)).amin(-1) + 1).clamp(min=1)
    extent_w = ((cols_on * idx_w).amax(-1) - torch.where(cols_on > 0, idx_w, float(width)).amin(-1) + 1).clamp(min=1)
    fill = area / (extent_h * extent_w)
    p_shape = torch.stack([
        (presence[i] * _shape_probability(fill[i], p.shape)).sum() / presence[i].sum().clamp(min=1e-6)
        for i, p in enumerate(parsed)])

    projections = d @ torch.tensor(list(DIRECTIONS.values()), dtype=clip.dtype, device=clip.device).T
    target = torch.tensor([list(DIRECTIONS).index(p.direction) for p in parsed], device=clip.device)
    along = projections.gather(1, target[:, None]).squeeze(1)
    others = projections.scatter(1, target[:, None], float("-inf"))
    best_other = others.amax(-1)
    p_dir = torch.sigmoid((along - hard.MIN_TRAVEL) / TRAVEL_WIDTH) * torch.sigmoid((along - best_other) / TRAVEL_WIDTH)
    ta = (p_color + p_shape + p_dir) / 3.0
    return torch.stack([vq, mq, ta], dim=-1)


class OracleReward:
    """The demo world's ground truth as a differentiable reward of noisy latents (module docstring)."""

    objectives = hard.OBJECTIVES

    def __init__(self, family: PipelineFamily, prompts: Sequence[str] | None = None) -> None:
        if family.prediction != "flow":
            raise ValueError("the demo oracle needs a flow-matching pipeline (x0 = x_t - t v)")
        self.family = family
        self.prompts = [p.text if isinstance(p, Prompt) else p for p in (prompts or all_prompts())]
        with torch.no_grad():
            cond, _ = family.encode_prompts(self.prompts, None)
        self._keys = cond.embeds.detach().float().flatten(1)

    def prompts_of(self, cond: TextConditioning) -> list[str]:
        """Each row's prompt: the world prompt whose embedding is nearest to the row's."""
        rows = cond.embeds.detach().float().flatten(1)
        return [self.prompts[int(i)] for i in torch.cdist(rows, self._keys).argmin(dim=1)]

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning,
                 shape: VideoShape) -> torch.Tensor:
        x0 = self.family.clean_estimate(latents, t, cond, shape)
        decode = self.family.decode_with_grad if torch.is_grad_enabled() else self.family.decode
        frames = decode(x0, shape, [torch.Generator(x0.device).manual_seed(0) for _ in x0])
        return soft_metrics(frames, self.prompts_of(cond))

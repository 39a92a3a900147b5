"""``classic``: a judge that needs no weights, from measures with published definitions.

Objectives (higher is better; pixel levels are on the 0-255 scale the definitions use):

- ``sharpness``: log(1 + variance of the Laplacian of the luma), averaged over frames (the
  variance-of-Laplacian focus measure, Pech-Pacheco et al. 2000; the log keeps one very sharp clip
  from dominating a mean).
- ``low_noise``: minus the noise sigma of the luma in levels, Immerkaer's fast estimate (1996):
  sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |Y * N|, N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]].
- ``temporal_flickering``: VBench's definition, (255 - mean |f_t - f_{t+1}|) / 255 over consecutive
  frames (a static clip scores 1; VBench applies it to static-scene clips, where change is flicker).
- ``motion_smoothness``: as VBench's (interpolate each interior frame from its neighbours, score
  (255 - mean absolute error) / 255), with OpenCV's DIS optical flow and a half-way warp standing in
  for VBench's learned interpolator (no weights to download). Not differentiable.
- ``colourfulness``: Hasler and Suesstrunk (2003), M = sigma_rgyb + 0.3 mu_rgyb, divided by 100
  (their "extremely colourful" is about 1.1).
- ``exposure``: 1 - 2 |mean luma - 1/2|: 1 for a mid-grey mean, 0 for all black or all white.

All but ``motion_smoothness`` are written in torch and keep the graph, so a gradient can reach the
frames (``differentiable``); the prompt is not read: these measure pictures, not alignment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from guidance.judges.base import DEFAULT_FPS, JudgeError, check_clips, check_scores

OBJECTIVES = ("sharpness", "low_noise", "temporal_flickering", "motion_smoothness", "colourfulness", "exposure")
#: ITU-R BT.601 luma weights, as OpenCV's and VBench's greyscale conversions use.
LUMA = (0.299, 0.587, 0.114)
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def luma(frames: torch.Tensor) -> torch.Tensor:
    """[B, F, H, W, 3] in [0, 1] -> luma [B, F, H, W] in levels (0-255)."""
    weights = torch.tensor(LUMA, dtype=frames.dtype, device=frames.device)
    return (frames * 255.0) @ weights


def _filter(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``kernel`` (3x3) over every frame of y [B, F, H, W], valid region only: [B, F, H-2, W-2]."""
    b, f, h, w = y.shape
    out = F.conv2d(y.reshape(b * f, 1, h, w), kernel.to(y)[None, None])
    return out.reshape(b, f, h - 2, w - 2)


def sharpness(frames: torch.Tensor) -> torch.Tensor:
    lap = _filter(luma(frames), _LAPLACIAN)
    return torch.log1p(lap.flatten(2).var(-1)).mean(1)


def low_noise(frames: torch.Tensor) -> torch.Tensor:
    y = luma(frames)
    h, w = y.shape[-2:]
    sigma = _filter(y, _IMMERKAER).abs().sum((-2, -1)) * (math.sqrt(math.pi / 2) / (6 * (w - 2) * (h - 2)))
    return -sigma.mean(1)


def temporal_flickering(frames: torch.Tensor) -> torch.Tensor:
    if frames.shape[1] < 2:
        return torch.ones(frames.shape[0], dtype=frames.dtype, device=frames.device)
    diff = (frames[:, 1:] - frames[:, :-1]).abs().mean((1, 2, 3, 4)) * 255.0
    return (255.0 - diff) / 255.0


def colourfulness(frames: torch.Tensor) -> torch.Tensor:
    rgb = frames * 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    rg, yb = rg.flatten(2), yb.flatten(2)  # [B, F, H*W]
    spread = torch.sqrt(rg.var(-1) + yb.var(-1) + 1e-12)
    centre = torch.sqrt(rg.mean(-1) ** 2 + yb.mean(-1) ** 2 + 1e-12)
    return ((spread + 0.3 * centre) / 100.0).mean(1)


def exposure(frames: torch.Tensor) -> torch.Tensor:
    return 1.0 - 2.0 * (luma(frames).mean((1, 2, 3)) / 255.0 - 0.5).abs()


def _midway(before: np.ndarray, after: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The frame half-way between ``before`` and ``after`` (uint8 RGB), warping each along half the
    flow from ``before`` to ``after`` and averaging."""
    import cv2

    h, w = before.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    half = 0.5 * flow
    from_before = cv2.remap(before, grid_x - half[..., 0], grid_y - half[..., 1], cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    from_after = cv2.remap(after, grid_x + half[..., 0], grid_y + half[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    return 0.5 * (from_before.astype(np.float32) + from_after.astype(np.float32))


def motion_smoothness(frames: torch.Tensor) -> torch.Tensor:
    """Interior frames predicted from their neighbours by optical flow; (255 - MAE) / 255 per clip."""
    import cv2

    clips = (frames.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    scores = []
    flow_of = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for clip in clips:
        if clip.shape[0] < 3:
            scores.append(1.0)
            continue
        errors = []
        for i in range(1, clip.shape[0] - 1):
            before, after = clip[i - 1], clip[i + 1]
            flow = flow_of.calc(cv2.cvtColor(before, cv2.COLOR_RGB2GRAY), cv2.cvtColor(after, cv2.COLOR_RGB2GRAY), None)
            errors.append(float(np.abs(_midway(before, after, flow) - clip[i].astype(np.float32)).mean()))
        scores.append((255.0 - float(np.mean(errors))) / 255.0)
    return torch.tensor(scores, dtype=frames.dtype, device=frames.device)


_MEASURES = {"sharpness": sharpness, "low_noise": low_noise, "temporal_flickering": temporal_flickering,
             "motion_smoothness": motion_smoothness, "colourfulness": colourfulness, "exposure": exposure}


class ClassicJudge:
    """The weight-free judge (module docstring); ``objectives`` may pick a subset, in any order."""

    def __init__(self, objectives: Sequence[str] = OBJECTIVES) -> None:
        unknown = sorted(set(objectives) - set(OBJECTIVES))
        if unknown or not objectives or len(set(objectives)) != len(objectives):
            raise JudgeError(f"judge classic: objectives must be distinct names among {list(OBJECTIVES)}; "
                             f"got {list(objectives)}")
        self.objectives = tuple(objectives)
        self.differentiable = frozenset(self.objectives) - {"motion_smoothness"}

    def score(self, frames: torch.Tensor, prompts: Sequence[str], fps: float = DEFAULT_FPS) -> torch.Tensor:
        check_clips("classic", frames, prompts)
        if min(frames.shape[2:4]) < 3:
            raise JudgeError(f"judge classic: frames must be at least 3x3 pixels; got {tuple(frames.shape[2:4])}")
        frames = frames.float()
        scores = torch.stack([_MEASURES[name](frames) for name in self.objectives], dim=-1)
        return check_scores("classic", self.objectives, scores, frames.shape[0])

"""What a judge is: a scorer of decoded video and the prompt's text, with named objectives.

A judge is the other half of a latent reward (``guidance.rewards``): a reward scores noisy latents and
gives the gradient guidance pushes along; a judge scores what a person would see, the decoded frames
and the words of the prompt. Judges rank search candidates, label the pairs a latent reward is
distilled from, and report held-out scores of jobs they did not steer. Higher is better for every
objective, so weights and labels read the same way as a reward's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

#: The frame rate frames are assumed to have when a caller gives none (the server's mp4 default).
DEFAULT_FPS = 16.0


class JudgeError(ValueError):
    """A judge that cannot be built or cannot score its input; the message names the judge and the rule."""


@runtime_checkable
class Judge(Protocol):
    """Scores clips: ``frames`` float [B, F, H, W, 3] in [0, 1], ``prompts`` one text per clip,
    ``fps`` their frame rate; returns float [B, K] in the order of ``objectives`` (higher is better).

    ``differentiable`` names the objectives whose score has a useful gradient with respect to the
    frames (the rest are computed without one); a judge may guide by gradient only on those.
    """

    objectives: tuple[str, ...]
    differentiable: frozenset[str]

    def score(self, frames: torch.Tensor, prompts: Sequence[str], fps: float = DEFAULT_FPS) -> torch.Tensor: ...


def check_clips(name: str, frames: torch.Tensor, prompts: Sequence[str]) -> None:
    """The input rules every judge shares, with errors that name the judge and the rule."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise JudgeError(f"judge {name}: frames must be [B, F, H, W, 3]; got {tuple(frames.shape)}")
    if len(prompts) != frames.shape[0]:
        raise JudgeError(f"judge {name}: {frames.shape[0]} clips but {len(prompts)} prompts")
    if not frames.is_floating_point():
        raise JudgeError(f"judge {name}: frames must be float in [0, 1]; got {frames.dtype}")


def check_scores(name: str, objectives: Sequence[str], scores: torch.Tensor, clips: int) -> torch.Tensor:
    """A judge's output, checked: [clips, K] float, finite (a plugin's bug must not become a label)."""
    expected = (clips, len(objectives))
    if tuple(scores.shape) != expected:
        raise JudgeError(f"judge {name} returned scores of shape {tuple(scores.shape)}; expected {expected}")
    if not bool(torch.isfinite(scores.detach()).all()):
        raise JudgeError(f"judge {name} returned a non-finite score")
    return scores.float()

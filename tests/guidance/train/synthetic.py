"""Synthetic, learnable preference data for training tests.

Latents are noise plus a per-clip offset. ``bright``: the clip whose latents have the larger mean
wins (a tie when the means are within ``TIE_MARGIN``); ``dark``: the opposite (each objective has
its own output, so an untrained model is right on both only by luck).
``other``: the clip with the larger contrast between the first two latent channels wins, labelled
on every other pair only (the rest missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

OBJECTIVES = ("bright", "dark", "other")
PROMPTS = ("a red circle moving left", "a blue square", "a green triangle moving up")
TIE_MARGIN = 0.05


def _winner(score_a: float, score_b: float, margin: float = 0.0) -> str:
    if abs(score_a - score_b) < margin:
        return "tie"
    return "A" if score_a > score_b else "B"


def latent_records(
    latent_shape: tuple[int, ...], count: int, seed: int = 0, test_every: int = 4, channel_dim: int = 0
) -> Iterator[dict[str, Any]]:
    """``count`` pairs of latents of ``latent_shape``; every ``test_every``-th pair is held out."""
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        a, b = (torch.randn(latent_shape, generator=generator) * 0.5
                + (torch.rand(1, generator=generator) * 2 - 1) for _ in range(2))
        labels = {"bright": _winner(float(a.mean()), float(b.mean()), TIE_MARGIN),
                  "dark": _winner(-float(a.mean()), -float(b.mean()), TIE_MARGIN)}
        if i % 2 == 0:
            contrast = [float(x.select(channel_dim, 0).mean() - x.select(channel_dim, 1).mean()) for x in (a, b)]
            labels["other"] = _winner(*contrast)
        yield {"prompt": PROMPTS[i % len(PROMPTS)], "a": a, "b": b, "labels": labels,
               "split": "test" if i % test_every == 0 else "train"}


def clip_records(frames: int, height: int, width: int, count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``count`` pairs of float clips [F, H, W, 3] in [0, 1]; the brighter clip wins ``bright``."""
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        a, b = ((torch.rand(frames, height, width, 3, generator=generator) * 0.5
                 + torch.rand(1, generator=generator) * 0.5) for _ in range(2))
        yield {"prompt": PROMPTS[i % len(PROMPTS)], "a": a, "b": b,
               "labels": {"bright": _winner(float(a.mean()), float(b.mean()))},
               "split": "test" if i % 2 == 0 else "train"}

"""Sampling a run's clips in batches and scoring them: the reward at t = 0, and a judge on the frames.

Only scores leave a batch: a real model's decoded clip is hundreds of megabytes, so frames are judged
as soon as they are decoded and dropped. Every row of a run (unguided, each guided setting) uses the same
(prompt, seed) items in the same order, so row ``i`` of one is the paired twin of row ``i`` of another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.judges import DEFAULT_FPS, Judge, check_scores
from guidance.nrg import GuidanceSpec
from guidance.reward_model import LatentRewardModel
from guidance.sample_types import SampleSpec
from guidance.sampler import sample
from guidance.train.distill import REPORT_SEED_BASE, TUNE_SEED_BASE

__all__ = ["REPORT_SEED_BASE", "TUNE_SEED_BASE", "ClipSettings", "ScoredClips", "items", "score_clips"]


@dataclass(frozen=True)
class ClipSettings:
    """How every clip of a run is made and judged: one setting for all rows, so that rows compare."""

    shape: VideoShape
    steps: int
    #: Clips sampled together; a real model's memory bounds it, the scores do not depend on it.
    batch: int = 8
    #: The frame rate the judge assumes.
    fps: float = DEFAULT_FPS

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1; got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"--batch must be >= 1; got {self.batch}")
        if not self.fps > 0:
            raise ValueError(f"--fps must be > 0; got {self.fps}")


@dataclass(frozen=True)
class ScoredClips:
    """Per clip, in the order of the run's items: the reward's final scores [N, K] and the judge's [N, J]."""

    rewards: torch.Tensor
    judged: torch.Tensor | None


def items(prompts: Sequence[str], seed_base: int, seeds: int) -> list[tuple[str, int]]:
    """Every (prompt, seed) of a run, prompt by prompt: seeds ``seed_base .. seed_base + seeds - 1``."""
    return [(prompt, seed_base + j) for prompt in prompts for j in range(seeds)]


def score_clips(
    family: PipelineFamily,
    reward: LatentRewardModel,
    run_items: Sequence[tuple[str, int]],
    guidance: GuidanceSpec | None,
    settings: ClipSettings,
    judge: Judge | None = None,
    judge_name: str = "judge",
    on_batch: Callable[[int], None] | None = None,
) -> ScoredClips:
    """Sample every item with ``guidance`` (None: unguided) and score it; ``on_batch(clips)`` after each
    batch (a progress bar). Without a judge nothing is decoded: the reward reads the latents."""
    rewards, judged = [], []
    for first in range(0, len(run_items), settings.batch):
        chunk = run_items[first:first + settings.batch]
        specs = [SampleSpec(prompt, seed=seed, guidance=guidance) for prompt, seed in chunk]
        result = sample(family, specs, settings.shape, settings.steps, reward, decode=judge is not None)
        rewards.append(result.rewards.float().cpu())
        if judge is not None:
            prompts = [prompt for prompt, _ in chunk]
            with torch.no_grad():
                scores = judge.score(result.frames, prompts, settings.fps)
            judged.append(check_scores(judge_name, judge.objectives, scores, len(chunk)).cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    return ScoredClips(torch.cat(rewards), torch.cat(judged) if judge is not None else None)

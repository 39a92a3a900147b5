"""A reward's calibration on the user's own model: its score statistics on the model's unguided clips.

The server turns every job's final rewards into ``rewards_z`` with them (``RewardCalibration``): how many
standard deviations a clip sits above a typical unguided clip of this model and these prompts. The scores
are the reward's at t = 0 on the final latents, the very scores a served job reports, so a z of 0 means
"as an unguided job". Calibration seeds are the tuning seeds: no choice is made from them here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from guidance.families.base import PipelineFamily
from guidance.reward_model import LatentRewardModel, RewardCalibration
from guidance.tuning.clips import TUNE_SEED_BASE, ClipSettings, items, score_clips


def check_enough_clips(run_items: Sequence[tuple[str, int]]) -> None:
    """A spread needs two clips: ``ValueError`` before any sampling when the prompts and seeds give fewer."""
    if len(run_items) < 2:
        raise ValueError(f"calibration needs at least 2 unguided clips (a spread); the prompts x --seeds give "
                         f"{len(run_items)}: add prompts or seeds")


def calibration_from(objectives: Sequence[str], scores: torch.Tensor, run_items: Sequence[tuple[str, int]],
                     command: str) -> RewardCalibration:
    """The calibration of final scores [N, K] of the unguided clips ``run_items``."""
    check_enough_clips(run_items)
    seeds = sorted({seed for _, seed in run_items})
    prompts = len({prompt for prompt, _ in run_items})
    return RewardCalibration.from_scores(objectives, scores, f"{command}: final-latent scores of {len(run_items)} "
                                                             f"unguided clips, {prompts} prompts x seeds "
                                                             f"{seeds[0]}..{seeds[-1]}")


def calibrate(family: PipelineFamily, reward: LatentRewardModel, prompts: Sequence[str], seeds: int,
              settings: ClipSettings, progress: bool = True) -> RewardCalibration:
    """Sample every prompt unguided on ``seeds`` calibration seeds and measure the reward's statistics."""
    settings.validate()
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    run_items = items(prompts, TUNE_SEED_BASE, seeds)
    check_enough_clips(run_items)
    with tqdm(total=len(run_items), desc="calibrate", unit="clip", disable=not progress) as bar:
        scored = score_clips(family, reward, run_items, None, settings, on_batch=bar.update)
    return calibration_from(reward.objectives, scored.rewards, run_items, "nrg eval --calibrate")

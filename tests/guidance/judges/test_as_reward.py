"""``guidance.judges.as_reward``: a judge ranks search candidates on the decoded clean estimate."""

from __future__ import annotations

import pytest
import torch

from guidance.batch_state import BatchState
from guidance.families.base import VideoShape
from guidance.judges.as_reward import JudgeReward
from guidance.nrg import GuidanceSpec
from guidance.sample_types import SampleSpec
from guidance.sampler import sample

SHAPE = VideoShape(height=32, width=32, frames=5)


class _Brightness:
    objectives = ("bright",)
    differentiable = frozenset({"bright"})

    def __init__(self) -> None:
        self.prompts: list[list[str]] = []

    def score(self, frames, prompts, fps=16.0):
        self.prompts.append(list(prompts))
        return frames.mean((1, 2, 3, 4))[:, None]


def test_scores_are_the_judges_of_the_decoded_clean_estimate(tiny_family):
    family = tiny_family("wan")
    judge = _Brightness()
    reward = JudgeReward(family, judge)
    batch = BatchState(family, SHAPE)
    batch.add([SampleSpec("a red ball", seed=1), SampleSpec("a blue cube", seed=2)], 3, [0, 1])
    rows = batch.rows
    t = torch.tensor([0.7, 0.0])
    scores = reward(rows.latents, t, rows.cond, SHAPE)
    x0 = family.clean_estimate(rows.latents, t, rows.cond, SHAPE)
    assert torch.equal(x0[1], rows.latents[1].float())  # t = 0: the latents are their own estimate
    frames = family.decode(x0, SHAPE, [torch.Generator().manual_seed(0)] * 2)
    assert torch.allclose(scores[:, 0], frames.mean((1, 2, 3, 4)), atol=1e-6)
    assert judge.prompts[0] == ["a red ball", "a blue cube"]  # the words, carried by the conditioning


def test_best_of_n_ranked_by_a_judge_runs_without_a_reward_model(tiny_family):
    family = tiny_family("wan")
    judge = _Brightness()
    spec = GuidanceSpec({"bright": 1.0}, 1.0, (0.2, 0.8), "best_of_n", 3)
    result = sample(family, [SampleSpec("a red ball", seed=4, guidance=spec), SampleSpec("a cat", seed=4)], SHAPE,
                    4, JudgeReward(family, judge))
    assert result.objectives == ("bright",) and result.rewards.shape == (2, 1)
    assert result.denoiser_passes[0] > result.denoiser_passes[1] == 4  # the particles cost passes
    assert torch.allclose(result.rewards[:, 0], result.frames.mean((1, 2, 3, 4)), atol=1e-5)


def test_gradient_modes_and_diffusion_models_are_refused(tiny_family):
    family = tiny_family("wan")
    batch = BatchState(family, SHAPE, JudgeReward(family, _Brightness()))
    relative = GuidanceSpec({"bright": 1.0}, 1.0, (0.2, 0.8), "relative", 4)
    with pytest.raises(ValueError, match="mode relative needs a gradient; this reward only ranks"):
        batch.add([SampleSpec("a", guidance=relative)], 3, [0])
    with pytest.raises(ValueError, match="flow-matching models"):
        JudgeReward(tiny_family("cogvideox"), _Brightness())

"""Non-finite latents are caught per sample at the step they appear; broken frames never pass."""

import torch

from guidance.families.base import VideoShape
from guidance.output_checks import output_problems
from guidance.sampler import SampleResult, SampleSpec, sample
from tests.guidance.nan_family import NanWan

SHAPE = VideoShape(height=32, width=32, frames=9)


def test_the_first_non_finite_step_is_reported_per_sample(tiny_family):
    family = NanWan(tiny_family("wan").pipe)
    specs = [SampleSpec("a red circle", seed=1), SampleSpec("nan square", seed=2), SampleSpec("a blue dot", seed=3)]
    result = sample(family, specs, SHAPE, 3)
    assert result.nonfinite_steps == [0, NanWan.NAN_STEP, 0]
    problems = output_problems(result, 3)
    assert problems[0] is None and problems[2] is None
    assert f"step {NanWan.NAN_STEP} of 3" in problems[1]
    # The batch-mates are exactly what they are alone.
    alone = sample(family, [specs[2]], SHAPE, 3)
    torch.testing.assert_close(result.frames[2], alone.frames[0])


def test_non_finite_or_black_frames_are_problems():
    good = torch.rand(2, 3, 4, 3)
    frames = torch.stack([good, torch.full_like(good, float("nan")), torch.zeros_like(good)])
    result = SampleResult(frames=frames, latents=torch.zeros(3, 1), rewards=None, objectives=(), ids=[0, 1, 2],
                          skipped_steps=[0] * 3, guided_steps=[0] * 3, nonfinite_steps=[0] * 3)
    problems = output_problems(result, 4)
    assert problems[0] is None
    assert "non-finite" in problems[1] and "all black" in problems[2]

"""The gradient diagnostic: a reward compared with itself is aligned; an unrelated one is not."""

import numpy as np
import pytest
import torch

from demo_world import world
from demo_world.diagnose import format_gradient_report, gradient_report
from demo_world.oracle import OracleReward
from guidance.demo import DEFAULT_MODEL_DIR
from guidance.families.base import VideoShape
from guidance.rewards import CallableReward

PROMPTS = ["a red square moving up", "a blue circle moving right", "a green triangle moving left"]
#: Small clips keep the VAE decode (the oracle's cost) short.
SHAPE = VideoShape(height=32, width=32, frames=5)


@pytest.fixture(scope="module")
def setup():
    from guidance.families import load_pipeline

    family = load_pipeline(DEFAULT_MODEL_DIR)
    clips = np.stack([world.render(p, seed=i, frames=SHAPE.frames, height=SHAPE.height, width=SHAPE.width)
                      for i, p in enumerate(PROMPTS)])
    clean = family.encode(torch.from_numpy(clips), SHAPE)
    return family, OracleReward(family, PROMPTS), clean


def test_the_oracle_against_itself_has_cosine_one(setup):
    family, oracle, clean = setup
    report = gradient_report(family, oracle, oracle, clean, PROMPTS, SHAPE, levels=(0.5,))
    entry = report["levels"][0]
    for objective in ("vq", "mq", "ta"):
        assert entry["cosine_with_oracle"][objective][0] == pytest.approx(1.0, abs=1e-4)
    assert entry["model_cross"] == entry["oracle_cross"]
    assert "cos ta vs oracle" in format_gradient_report(report)


def test_a_fixed_random_direction_is_nearly_orthogonal_to_the_oracle(setup):
    family, oracle, clean = setup
    directions = torch.randn((3, clean[0].numel()), generator=torch.Generator().manual_seed(7))

    def linear(latents, t, embeds):
        return latents.flatten(1).float() @ directions.T

    report = gradient_report(family, CallableReward(linear, ("vq", "mq", "ta")), oracle, clean, PROMPTS,
                             SHAPE, levels=(0.3,))
    entry = report["levels"][0]
    bound = 6 / clean[0].numel() ** 0.5
    for objective in ("vq", "mq", "ta"):
        assert abs(entry["cosine_with_oracle"][objective][0]) < bound
    for pair, (mean, _) in entry["model_cross"].items():
        assert abs(mean) < bound, pair

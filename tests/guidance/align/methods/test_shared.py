"""The option groups several methods take: online sampling and the reward model."""

import re

import pytest

from guidance.align.config import AlignConfig
from guidance.align.methods.registry import methods_taking
from guidance.align.methods.shared import OnlineOptions, RewardModelOptions


def test_online_steps_must_be_at_least_one():
    with pytest.raises(ValueError, match=re.escape("--online-steps must be >= 1; got 0")):
        AlignConfig(method="diffusion-dro", online_steps=0).validate()
    AlignConfig(method="diffusion-dro", online_steps=1, online_cfg=0.0).validate()


def test_the_methods_that_sample_while_training_take_online_sampling():
    assert methods_taking(OnlineOptions) == ("diffusion-dro", "spo", "gradspo", "spro", "hybrid")
    assert methods_taking(RewardModelOptions) == ("spo", "gradspo", "spro")

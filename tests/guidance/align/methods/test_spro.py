"""SPRO's options: rounds, samples and the judge, which needs a reward model or the caller's frame judge."""

import re

import pytest

from guidance.align.config import AlignConfig
from guidance.align.methods.registry import REGISTRY


@pytest.mark.parametrize("settings, message", [
    (dict(rounds=0), "--rounds must be >= 1; got 0"),
    (dict(spro_samples=1), "--spro-samples must be >= 2; got 1"),
    (dict(judge="people"), "--judge must be reward or demo; got 'people'"),
])
def test_each_rule_refuses_with_the_flag_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignConfig(method="spro", reward_model="R", **settings).validate()


def test_the_reward_judge_needs_a_reward_model_and_the_demo_judge_does_not():
    with pytest.raises(ValueError, match=re.escape("--method spro needs --reward-model REWARD_DIR (the latent reward "
                                                   "model that judges the samples, or --judge demo)")):
        AlignConfig(method="spro").validate()
    AlignConfig(method="spro", judge="demo", rounds=1, spro_samples=2).validate()


def test_only_the_demo_judge_asks_the_caller_for_a_frame_judge():
    spro = REGISTRY["spro"]
    assert spro.uses_frame_judge(AlignConfig(method="spro", judge="demo"))
    assert not spro.uses_frame_judge(AlignConfig(method="spro", reward_model="R"))
    assert not any(m.uses_frame_judge(AlignConfig(method=name, judge="demo")) for name, m in REGISTRY.items()
                   if name != "spro")

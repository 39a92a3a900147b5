"""SPO's and GradSPO's options: the step pairs they share, each one's loss, and their reward model."""

import re

import pytest

from guidance.align.config import AlignConfig

REWARD = dict(reward_model="REWARD_DIR")


@pytest.mark.parametrize("method, settings, message", [
    ("spo", dict(spo_children=1), "--spo-children must be >= 2; got 1"),
    ("gradspo", dict(spo_threshold=1.0), "--spo-threshold must be in [0, 1); got 1.0"),
    ("spo", dict(spo_threshold=-0.1), "--spo-threshold must be in [0, 1); got -0.1"),
    ("gradspo", dict(spo_noise=0.0), "--spo-noise must be > 0; got 0.0"),
    ("spo", dict(spo_beta=0.0), "--spo-beta must be > 0; got 0.0"),
    ("spo", dict(spo_clip=0.0), "--spo-clip must be in (0, 1); got 0.0"),
    ("spo", dict(spo_clip=1.0), "--spo-clip must be in (0, 1); got 1.0"),
    ("gradspo", dict(gradspo_g=-0.1), "--gradspo-g must be >= 0; got -0.1"),
    ("gradspo", dict(gradspo_ema=1.0), "--gradspo-ema must be in [0, 1); got 1.0"),
    ("gradspo", dict(gradspo_ema=-0.1), "--gradspo-ema must be in [0, 1); got -0.1"),
])
def test_each_rule_refuses_with_the_flag_named(method, settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignConfig(method=method, **REWARD, **settings).validate()


def test_the_bounds_themselves_are_allowed():
    AlignConfig(method="spo", spo_children=2, spo_threshold=0.0, spo_beta=1e-6, spo_clip=0.5, **REWARD).validate()
    AlignConfig(method="gradspo", gradspo_g=0.0, gradspo_ema=0.0, **REWARD).validate()


@pytest.mark.parametrize("method", ["spo", "gradspo"])
def test_both_need_a_reward_model(method):
    with pytest.raises(ValueError, match=f"--method {method} needs --reward-model REWARD_DIR .*each step's children"):
        AlignConfig(method=method).validate()

"""SUDO's options: its transformations and the weights of its loss."""

import re

import pytest

from guidance.align.config import AlignConfig


@pytest.mark.parametrize("settings, message", [
    (dict(sudo_sft=1.5), "--sudo-sft must be in [0, 1]; got 1.5"),
    (dict(sudo_sft=-0.1), "--sudo-sft must be in [0, 1]; got -0.1"),
    (dict(sudo_blur=0), "--sudo-blur must be >= 1; got 0"),
    (dict(sudo_noise=0.0), "--sudo-noise must be > 0; got 0.0"),
    (dict(sudo_transforms="reverse,flip"), "--sudo-transforms must name some of permute, reverse, shuffle, blur, noise"),
    (dict(sudo_transforms=" , "), "--sudo-transforms must name some of"),
])
def test_each_rule_refuses_with_the_flag_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignConfig(method="sudo", **settings).validate()


def test_the_bounds_themselves_are_allowed():
    AlignConfig(method="sudo", sudo_sft=0.0, sudo_blur=1, sudo_noise=1e-6, sudo_transforms="reverse").validate()
    AlignConfig(method="sudo", sudo_sft=1.0).validate()


def test_the_transformations_are_checked_for_sudo_runs_only():
    AlignConfig(method="flow-dpo", sudo_transforms="flip").validate()

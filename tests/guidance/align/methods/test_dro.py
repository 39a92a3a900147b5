"""Diffusion-DRO's options: the hinge margin and the lag of the copy that samples the negatives."""

import re

import pytest

from guidance.align.config import AlignConfig


@pytest.mark.parametrize("settings, message", [
    (dict(dro_margin=-0.1), "--dro-margin must be >= 0; got -0.1"),
    (dict(dro_lag=0), "--dro-lag must be >= 1; got 0"),
])
def test_each_rule_refuses_with_the_flag_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignConfig(method="diffusion-dro", **settings).validate()


def test_the_bounds_themselves_are_allowed():
    AlignConfig(method="diffusion-dro", dro_margin=0.0, dro_lag=1).validate()

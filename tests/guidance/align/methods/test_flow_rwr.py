"""Flow-RWR's option: the temperature of its weights."""

import re

import pytest

from guidance.align.config import AlignConfig


@pytest.mark.parametrize("tau", [0.0, -1.0, float("inf"), float("nan")])
def test_tau_must_be_a_positive_number(tau):
    with pytest.raises(ValueError, match=re.escape(f"--tau must be a positive number; got {tau}")):
        AlignConfig(method="flow-rwr", tau=tau).validate()


def test_a_small_tau_is_allowed():
    AlignConfig(method="flow-rwr", tau=1e-6).validate()

"""Hybrid offline-online's options: the lengths of its offline and online phases."""

import re

import pytest

from guidance.align.config import AlignConfig


@pytest.mark.parametrize("settings, message", [
    (dict(hybrid_offline=0), "--hybrid-offline must be >= 1; got 0"),
    (dict(hybrid_online=-1), "--hybrid-online must be >= 0; got -1"),
])
def test_each_rule_refuses_with_the_flag_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignConfig(method="hybrid", **settings).validate()


def test_the_bounds_themselves_are_allowed():
    AlignConfig(method="hybrid", hybrid_offline=1, hybrid_online=0).validate()

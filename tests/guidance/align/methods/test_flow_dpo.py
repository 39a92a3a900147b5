"""Flow-DPO's composable options (IS-DAA, TVKD, Diff-UAPA): each rule on their values, and which
methods they compose with."""

import re

import pytest

from guidance.align.config import AlignConfig
from guidance.align.methods.flow_dpo import IsDaaOptions, TvkdOptions, UapaOptions


@pytest.mark.parametrize("settings, message", [
    (dict(is_clip=-0.1), "--is-clip must be >= 0; got -0.1"),
    (dict(is_clip=float("inf")), "--is-clip must be >= 0; got inf"),
    (dict(is_clip=0.25, is_kappa=0.0), "--is-kappa must be > 0; got 0.0"),
    (dict(is_kappa=3.0), "--is-kappa needs --is-clip"),
    (dict(teacher="R", tvkd_alpha=-1.0), "--tvkd-alpha must be >= 0; got -1.0"),
    (dict(teacher="R", tvkd_alpha=float("inf")), "--tvkd-alpha must be >= 0; got inf"),
    (dict(teacher="R", tvkd_gamma=1.5), "--tvkd-gamma must be in [0, 1]; got 1.5"),
    (dict(teacher="R", tvkd_gamma=-0.1), "--tvkd-gamma must be in [0, 1]; got -0.1"),
    (dict(tvkd_alpha=0.5), "--tvkd-alpha / --tvkd-gamma need --teacher"),
    (dict(tvkd_gamma=0.5), "--tvkd-alpha / --tvkd-gamma need --teacher"),
    (dict(uapa_map_ratio=-0.1), "--uapa-map-ratio must be >= 0; got -0.1"),
])
def test_each_rule_refuses_with_the_flag_named(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AlignConfig(method="flow-dpo", **settings).validate()


def test_the_bounds_themselves_are_allowed():
    AlignConfig(is_clip=0.0, is_kappa=1e-9, teacher="R", tvkd_alpha=0.0, tvkd_gamma=0.0, uapa_map_ratio=0.0).validate()
    AlignConfig(teacher="R", tvkd_gamma=1.0).validate()
    for kind in (IsDaaOptions, TvkdOptions, UapaOptions):
        kind().validate()


@pytest.mark.parametrize("method, settings, flag", [
    ("flow-rwr", dict(is_clip=0.1), "--is-clip composes with --method flow-dpo / spro / hybrid only"),
    ("abc", dict(is_clip=0.1), "--is-clip composes with --method flow-dpo / spro / hybrid only"),
    ("diffusion-dro", dict(teacher="R"), "--teacher composes with --method flow-dpo / spro / hybrid only"),
    ("spro", dict(uapa_map_ratio=0.25, reward_model="R"), "--uapa-map-ratio composes with --method flow-dpo / hybrid only"),
])
def test_options_are_refused_by_the_methods_without_a_pair_loss(method, settings, flag):
    with pytest.raises(ValueError, match=re.escape(flag) + f".*--method {method} has no such term"):
        AlignConfig(method=method, **settings).validate()


@pytest.mark.parametrize("method, settings", [
    ("flow-dpo", dict(is_clip=0.1, teacher="R", uapa_map_ratio=0.25)),
    ("hybrid", dict(is_clip=0.1, teacher="R", uapa_map_ratio=0.25)),
    ("spro", dict(is_clip=0.1, teacher="R", reward_model="R")),
])
def test_options_compose_with_the_methods_that_take_them(method, settings):
    AlignConfig(method=method, **settings).validate()

"""Choosing a strength from the judge's paired verdicts (``guidance.tuning.tune``, ``paired_change``)."""

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.tuning.clips import ClipSettings
from guidance.tuning.paired_change import paired_change
from guidance.tuning.tune import StrengthScore, TuneConfig, choose


def _change(differences, tie_share=0.1, reward_change=0.0):
    unguided = torch.tensor([0.0, 1.0, 2.0, 3.0])
    return paired_change(unguided, unguided + torch.tensor(differences), torch.zeros(4),
                         torch.full((4,), reward_change), tie_share)


def test_pairs_inside_the_tie_margin_are_ties_and_an_unchanged_score_always_is():
    change = _change([0.5, -0.5, 0.1, 0.0])  # margin 0.1 x std 1.29 = 0.129
    assert (change.judge.wins, change.judge.losses, change.judge.ties) == (1, 1, 2) and change.net_share == 0.0
    flat = paired_change(torch.ones(3), torch.tensor([1.0, 1.0, 2.0]), torch.zeros(3), torch.zeros(3), 0.1)
    assert (flat.judge.wins, flat.judge.ties) == (1, 2)  # no unguided spread: still no win from nothing
    assert flat.judge_gain == pytest.approx(1 / 3)  # in the judge's own units when it has no spread


def test_the_reward_rising_while_the_judge_falls_is_flagged():
    assert _change([-1.0, -1.0, -1.0, 0.0], reward_change=0.3).hacked
    assert not _change([1.0, 1.0, -1.0, 0.0], reward_change=0.3).hacked


def test_the_choice_is_the_best_net_share_then_gain_then_the_smaller_strength_and_only_if_it_helps():
    def score(strength, *differences):
        return StrengthScore(strength, {o: _change(d) for o, d in zip("ab", differences)})

    helps, more_gain = [1.0, 1.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0]
    assert choose([score(1, helps, helps), score(2, helps, more_gain), score(4, helps, [0.0] * 4)]) == 2
    assert choose([score(2, helps, helps), score(1, helps, helps)]) == 1
    assert choose([score(1, [0.01] * 4, [0.01] * 4)]) is None  # a gain inside the margins is no evidence
    assert choose([score(1, [-1.0] * 4, helps)]) is None


@pytest.mark.parametrize("change, message", [
    ({"strengths": ()}, "--strengths"), ({"strengths": (float("nan"),)}, "--strengths"),
    ({"seeds": 0}, "--seeds and --report-seeds"), ({"tie_share": -1.0}, "--tie-share"),
    ({"window": (0.9, 0.1)}, "--mode / --window"), ({"mode": "loud"}, "--mode / --window"),
    ({"clips": ClipSettings(VideoShape(32, 32, 9), 3, batch=0)}, "--batch"), ({"prompts": ()}, "--prompts"),
])
def test_a_bad_setting_is_refused_naming_its_flag(change, message):
    base = {"prompts": ("a kite",), "strengths": (1.0,), "mode": "relative", "window": (0.2, 0.8),
            "clips": ClipSettings(VideoShape(32, 32, 9), 3)}
    with pytest.raises(ValueError, match=message):
        TuneConfig(**{**base, **change}).validate()

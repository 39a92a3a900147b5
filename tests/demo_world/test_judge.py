"""``demo_world.judge``: the ground truth as a plugin judge reads the same figures as the metrics."""

from __future__ import annotations

import pytest
import torch

from demo_world import metrics, world
from demo_world.judge import JERK_CAP, OBJECTIVES, ground_truth
from guidance.judges import JudgeError, load_judge


def test_the_plugin_judge_reports_the_metrics_signed_higher_is_better():
    judge = load_judge("demo_world.judge:ground_truth")
    assert judge.objectives == OBJECTIVES
    prompts = ["a red circle moving right", "a blue square moving up quickly"]
    clips = torch.stack([torch.from_numpy(world.render(p, seed=3)).float() for p in prompts])
    scores = judge.score(clips, prompts)
    for row, (clip, prompt) in enumerate(zip(clips, prompts)):
        report = metrics.evaluate_clip(clip, prompt)
        got = dict(zip(OBJECTIVES, scores[row].tolist()))
        assert got["vq"] == pytest.approx(report.vq, abs=1e-6) and got["ta"] == pytest.approx(report.ta, abs=1e-6)
        assert got["low_jerk"] == pytest.approx(-report.jerk, abs=1e-5)
        assert got["low_background_noise"] == pytest.approx(-report.background_sigma, abs=1e-6)


def test_a_prompt_outside_the_world_has_no_truth():
    with pytest.raises(JudgeError, match="not a demo-world prompt"):
        ground_truth("cpu").score(torch.zeros(1, 3, 16, 16, 3), ["a cat on a sofa"])


def test_a_clip_whose_jerk_cannot_be_measured_scores_the_cap_not_infinity():
    """A blank clip has no object to track: its jerk is infinite in the metrics, its score finite here (a
    judge's scores must be), and MQ is 0 either way."""
    prompt = "a red circle moving right"
    assert metrics.evaluate_clip(torch.zeros(9, 32, 32, 3), prompt).jerk == float("inf")
    got = dict(zip(OBJECTIVES, ground_truth("cpu").score(torch.zeros(1, 9, 32, 32, 3), [prompt])[0].tolist()))
    assert got["low_jerk"] == -JERK_CAP and got["mq"] == 0.0

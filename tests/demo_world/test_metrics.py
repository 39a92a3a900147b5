"""Ground-truth metrics: rendered clips score well; broken clips score lower."""

import numpy as np
import pytest
import torch

from demo_world import world
from demo_world.metrics import evaluate, evaluate_clip


def _blur(clip, k=2):
    t = torch.from_numpy(clip).permute(0, 3, 1, 2)
    t = torch.nn.functional.avg_pool2d(t, 2 * k + 1, 1, k, count_include_pad=False)
    return t.permute(0, 2, 3, 1).numpy()


def test_rendered_clips_score_full_text_alignment_and_high_quality():
    prompts = world.all_prompts()[::5]
    for i, prompt in enumerate(prompts):
        report = evaluate_clip(world.render(prompt, 100 + i), prompt)
        assert report.ta == 1.0, (prompt.text, report)
        assert report.vq >= 0.8 and report.mq >= 0.8, (prompt.text, report)


def test_wrong_prompt_lowers_text_alignment_by_each_wrong_word():
    clip = world.render("a red circle moving left", 3)
    assert evaluate(clip, "a red circle moving left")["ta"] == 1.0
    assert evaluate(clip, "a blue circle moving left")["ta"] == pytest.approx(2 / 3)
    assert evaluate(clip, "a blue square moving left")["ta"] == pytest.approx(1 / 3)
    assert evaluate(clip, "a blue square moving up")["ta"] == 0.0


@pytest.mark.parametrize("prompt", ["a red circle moving left", "a green square moving up", "a yellow triangle moving right"])
def test_noise_blur_and_stillness_score_lower(prompt):
    rng = np.random.default_rng(0)
    clip = world.render(prompt, 5)
    clean = evaluate(clip, prompt)
    noisy = evaluate(np.clip(clip + rng.normal(0, 0.08, clip.shape), 0, 1).astype(np.float32), prompt)
    blurred = evaluate(_blur(clip), prompt)
    static = evaluate(np.repeat(clip[:1], len(clip), 0), prompt)
    jittery = evaluate(clip[rng.permutation(len(clip))], prompt)
    assert noisy["vq"] < 0.5 * clean["vq"] and blurred["vq"] < 0.6 * clean["vq"]
    assert static["mq"] < 1e-6 and static["ta"] < 1.0
    assert jittery["mq"] < 0.2 * clean["mq"]
    assert noisy["mq"] < clean["mq"]


def test_empty_and_pure_noise_clips_score_zero():
    assert evaluate(np.zeros((17, 64, 64, 3), np.float32), "a red circle moving left") == {"vq": 0.0, "mq": 0.0, "ta": 0.0}
    noise = np.random.default_rng(1).uniform(0, 1, (17, 64, 64, 3)).astype(np.float32)
    assert evaluate(noise, "a red circle moving left") == {"vq": 0.0, "mq": 0.0, "ta": 0.0}


def test_metrics_accept_torch_tensors_and_stay_in_unit_range():
    clip = torch.from_numpy(world.render("a blue square moving down quickly", 2))
    scores = evaluate(clip, "a blue square moving down quickly")
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_a_vae_round_trip_of_rendered_clips_keeps_most_of_each_motion_factor():
    """The motion scales are referenced to the embedded VAE: encoding and decoding a perfect render
    must not by itself cost the clip most of its MQ (version 1's jerk scale cost it half)."""
    from demo_world import metrics
    from guidance.demo import DEFAULT_MODEL_DIR, DEFAULT_SHAPE
    from guidance.families import load_pipeline

    family = load_pipeline(DEFAULT_MODEL_DIR)
    prompts = world.all_prompts()[::18]
    clips = torch.from_numpy(np.stack([world.render(p, 300 + i) for i, p in enumerate(prompts)])).float()
    with torch.no_grad():
        decoded = family.decode(family.encode(clips, DEFAULT_SHAPE), DEFAULT_SHAPE, [torch.Generator()] * len(prompts))
    reports = [evaluate_clip(clip, p) for clip, p in zip(decoded.float().numpy(), prompts)]
    assert all(r.ta == 1.0 for r in reports), reports
    assert np.median([np.exp(-r.jerk / metrics.JERK_SCALE) for r in reports]) >= 0.8
    assert np.median([np.exp(-r.area_cv / metrics.AREA_CV_SCALE) for r in reports]) >= 0.8
    assert np.median([r.mq for r in reports]) >= 0.6

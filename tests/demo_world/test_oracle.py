"""The differentiable oracle follows the hard ground-truth metrics, and scores noisy latents."""

import numpy as np
import pytest
import torch

from demo_world import metrics, world
from demo_world.oracle import OracleReward, soft_metrics
from guidance.demo import DEFAULT_MODEL_DIR
from guidance.families.base import VideoShape

PROMPT = world.parse_prompt("a red square moving right")
#: Small clips keep the VAE decode (the oracle's cost) short.
SMALL = VideoShape(height=32, width=32, frames=5)


def _soft(clip: np.ndarray, prompt=PROMPT) -> dict[str, float]:
    scores = soft_metrics(torch.from_numpy(np.ascontiguousarray(clip))[None], [prompt])[0]
    return dict(zip(metrics.OBJECTIVES, scores.tolist()))


def _blur(clip: np.ndarray) -> np.ndarray:
    """Edges about five pixels wide: blurrier than the demo VAEs decode (VQ's sharpness reference)."""
    kernel = np.convolve(np.ones(3) / 3, np.ones(3) / 3)
    out = clip
    for axis in (1, 2):
        out = np.apply_along_axis(lambda x: np.convolve(x, kernel, "same"), axis, out)
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def clip():
    return world.render(PROMPT, seed=3)


def test_a_clean_render_scores_near_the_top_on_every_objective(clip):
    soft, hard = _soft(clip), metrics.evaluate(clip, PROMPT)
    for objective in metrics.OBJECTIVES:
        assert soft[objective] == pytest.approx(hard[objective], abs=0.15), objective
        assert soft[objective] > 0.75


def test_each_corruption_lowers_the_objective_it_corrupts(clip):
    clean = _soft(clip)
    noisy = np.clip(clip + np.random.default_rng(0).normal(0, 0.05, clip.shape), 0, 1).astype(np.float32)
    assert _soft(noisy)["vq"] < clean["vq"] - 0.3
    assert _soft(_blur(clip))["vq"] < clean["vq"] - 0.3
    shuffled = clip[np.random.default_rng(1).permutation(clip.shape[0])]
    assert _soft(shuffled)["mq"] < clean["mq"] - 0.3
    assert _soft(clip[::-1].copy())["ta"] < clean["ta"] - 0.25  # moving left, prompt says right
    assert _soft(clip, world.parse_prompt("a blue square moving right"))["ta"] < clean["ta"] - 0.25
    assert _soft(clip, world.parse_prompt("a red triangle moving right"))["ta"] < clean["ta"] - 0.25


def test_gradient_ascent_on_the_soft_score_raises_the_hard_metric(clip):
    noisy = torch.from_numpy(np.clip(clip + np.random.default_rng(2).normal(0, 0.03, clip.shape), 0, 1)
                             .astype(np.float32))
    before = metrics.evaluate(noisy.numpy(), PROMPT)["vq"]
    x = noisy.clone()[None].requires_grad_(True)
    for _ in range(10):
        (grad,) = torch.autograd.grad(soft_metrics(x, [PROMPT])[0, 0], x)
        with torch.no_grad():
            x += 0.01 * grad / grad.abs().amax().clamp(min=1e-12)
            x.clamp_(0, 1)
    after = metrics.evaluate(x.detach()[0].numpy(), PROMPT)["vq"]
    assert after > before + 0.1


@pytest.fixture(scope="module")
def demo_family():
    from guidance.families import load_pipeline

    return load_pipeline(DEFAULT_MODEL_DIR)


def test_oracle_reward_reads_the_prompts_and_scores_the_clean_estimate(demo_family):
    from guidance.train.reward import PromptCache

    prompts = ["a green circle moving down", "a yellow triangle moving up slowly"]
    oracle = OracleReward(demo_family, [*prompts, "a green circle moving up", "a red triangle moving up slowly"])
    cond = PromptCache(demo_family)(prompts)
    assert oracle.prompts_of(cond) == prompts
    latents = demo_family.prepare_latents(SMALL, [torch.Generator().manual_seed(s) for s in (0, 1)])
    at_zero = oracle(latents, torch.zeros(2), cond, SMALL)
    torch.testing.assert_close(at_zero, soft_metrics(demo_family.decode(latents, SMALL, []), prompts))

    x = latents.clone().requires_grad_(True)
    scores = oracle(x, torch.full((2,), 0.5), cond, SMALL)
    assert scores.shape == (2, 3)
    (grad,) = torch.autograd.grad(scores[:, 2].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

"""The ``classic`` judge: each measure ranks clips the way its published definition says it should."""

from __future__ import annotations

import pytest
import torch

from guidance.judges import JudgeError
from guidance.judges.classic import OBJECTIVES, ClassicJudge


def _moving_square(frames: int = 9, size: int = 48, jumps: bool = False, seed: int = 0) -> torch.Tensor:
    """A bright square on a dark textured background, moving 2 px a frame (or jumping at random)."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.full((frames, size, size, 3), 0.2)
    clip += 0.02 * torch.rand((1, size, size, 3), generator=g)  # static texture, the same every frame
    positions = torch.randint(4, size - 16, (frames,), generator=g) if jumps else torch.arange(frames) * 2 + 4
    for f, x in enumerate(positions.tolist()):
        clip[f, 16:28, x:x + 12] = torch.tensor([0.9, 0.3, 0.2])
    return clip


def _score(clips: list[torch.Tensor], objective: str) -> list[float]:
    judge = ClassicJudge([objective])
    return judge.score(torch.stack(clips), ["a prompt"] * len(clips))[:, 0].tolist()


def test_blur_lowers_sharpness():
    sharp = _moving_square()
    blurred = torch.nn.functional.avg_pool2d(sharp.permute(0, 3, 1, 2), 5, 1, 2).permute(0, 2, 3, 1)
    high, low = _score([sharp, blurred], "sharpness")
    assert high > low + 0.5


def test_low_noise_reads_the_noise_sigma_in_levels():
    g = torch.Generator().manual_seed(1)
    flat = torch.full((3, 64, 64, 3), 0.5)
    noisy = (flat + torch.randn((3, 64, 64, 1), generator=g) * (10 / 255)).clamp(0, 1)  # grey noise: luma sigma 10
    clean_score, noisy_score = _score([flat, noisy], "low_noise")
    assert clean_score == pytest.approx(0.0, abs=1e-3)
    assert noisy_score == pytest.approx(-10.0, rel=0.15)  # Immerkaer's estimate of a sigma of 10 levels


def test_flicker_lowers_temporal_flickering_and_a_still_clip_scores_one():
    still = torch.full((6, 16, 16, 3), 0.4)
    flicker = still.clone()
    flicker[1::2] += 0.2
    still_score, flicker_score = _score([still, flicker], "temporal_flickering")
    assert still_score == pytest.approx(1.0)
    assert flicker_score == pytest.approx((255 - 0.2 * 255) / 255, abs=1e-4)


def test_steady_motion_is_smoother_than_jumps():
    steady, jumping = _score([_moving_square(), _moving_square(jumps=True)], "motion_smoothness")
    assert steady > jumping + 0.01
    assert steady > 0.97


def test_colourfulness_and_exposure_follow_their_definitions():
    grey = torch.full((2, 16, 16, 3), 0.5)
    colourful = grey.clone()
    colourful[:, :8] = torch.tensor([1.0, 0.0, 0.0])
    colourful[:, 8:] = torch.tensor([0.0, 0.0, 1.0])
    black = torch.zeros_like(grey)
    assert _score([grey], "colourfulness")[0] == pytest.approx(0.0, abs=1e-4)
    assert _score([colourful], "colourfulness")[0] > 1.0
    assert _score([grey, black], "exposure") == pytest.approx([1.0, 0.0], abs=1e-3)


def test_every_objective_in_order_and_gradients_only_where_differentiable():
    judge = ClassicJudge()
    assert judge.objectives == OBJECTIVES and "motion_smoothness" not in judge.differentiable
    frames = torch.stack([_moving_square(), _moving_square(seed=3)]).requires_grad_(True)
    scores = judge.score(frames, ["a", "b"])
    assert scores.shape == (2, len(OBJECTIVES)) and torch.isfinite(scores).all()
    for k, name in enumerate(OBJECTIVES):
        (grad,) = torch.autograd.grad(scores[:, k].sum(), frames, retain_graph=True, allow_unused=True)
        moved = grad is not None and bool(grad.abs().sum() > 0)
        assert moved == (name in judge.differentiable), name


def test_bad_input_names_the_rule():
    with pytest.raises(JudgeError, match="objectives must be distinct names"):
        ClassicJudge(["sharpness", "beauty"])
    judge = ClassicJudge()
    with pytest.raises(JudgeError, match=r"frames must be \[B, F, H, W, 3\]"):
        judge.score(torch.zeros(4, 16, 16, 3), ["a"])
    with pytest.raises(JudgeError, match="2 clips but 1 prompts"):
        judge.score(torch.zeros(2, 4, 16, 16, 3), ["a"])
    with pytest.raises(JudgeError, match="at least 3x3"):
        judge.score(torch.zeros(1, 4, 2, 2, 3), ["a"])

import pytest

from guidance.families.base import VideoShape
from tests.guidance.families.equivalence import (
    assert_batch_invariant, assert_decode_with_grad_matches_decode, assert_matches_pipeline,
)

SHAPE = VideoShape(height=32, width=32, frames=9)


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_sampler_matches_wan_pipeline(tiny_family, cfg_scale):
    assert_matches_pipeline(tiny_family("wan"), SHAPE, steps=4, cfg_scale=cfg_scale)


def test_wan_batch_invariance(tiny_family):
    assert_batch_invariant(tiny_family("wan"), SHAPE, steps=3, cfg_scales=(5.0, 1.0, 2.5))


@pytest.mark.parametrize(
    ("shape", "field"),
    [(VideoShape(32, 32, 8), "frames"), (VideoShape(30, 32, 9), "height"), (VideoShape(32, 20, 9), "width")],
)
def test_wan_rejects_shapes_the_pipeline_would_round(tiny_family, shape, field):
    with pytest.raises(ValueError, match=field):
        tiny_family("wan").check_shape(shape)


def test_wan_encode_gives_the_prepare_latents_layout_and_round_trips(tiny_family):
    import torch

    family = tiny_family("wan")
    frames = torch.rand(2, SHAPE.frames, SHAPE.height, SHAPE.width, 3, generator=torch.Generator().manual_seed(0))
    latents = family.encode(frames, SHAPE)
    noise = family.prepare_latents(SHAPE, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert latents.shape == noise.shape and latents.dtype == noise.dtype
    # The posterior mode: deterministic, and per sample.
    assert torch.allclose(family.encode(frames[1:], SHAPE)[0], latents[1], atol=1e-5)
    decoded = family.decode(latents, SHAPE, [torch.Generator() for _ in range(2)])
    assert decoded.shape == frames.shape and decoded.dtype == torch.float32  # random tiny VAE: shape only
    with pytest.raises(ValueError, match="frames"):
        family.encode(frames[:, :8], VideoShape(32, 32, 8))


def test_flow_add_noise_interpolates_linearly_in_t(tiny_family):
    import torch

    family = tiny_family("wan")
    x0, noise = torch.randn(3, 16, 3, 4, 4), torch.randn(3, 16, 3, 4, 4)
    t = torch.tensor([0.0, 0.25, 1.0])
    x_t = family.add_noise(x0, noise, t)
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[2], noise[2])
    assert torch.allclose(x_t[1], 0.75 * x0[1] + 0.25 * noise[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        family.add_noise(x0, noise, torch.tensor([0.0, 0.5, 1.5]))


def test_wan_decode_with_grad_is_decode_keeping_the_graph(tiny_family):
    assert_decode_with_grad_matches_decode(tiny_family("wan"), SHAPE)

import math

import pytest
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

from guidance.families.base import VideoShape
from guidance.families.cogvideox import CogVideoXFamily
from tests.guidance.families.equivalence import (
    assert_batch_invariant, assert_decode_with_grad_matches_decode, assert_matches_pipeline,
)

SHAPE = VideoShape(height=32, width=32, frames=9)


def _variant(family: CogVideoXFamily, **components) -> CogVideoXFamily:
    """The tiny pipeline with some components swapped (the cached one is left untouched)."""
    pipe = CogVideoXPipeline(**{**family.pipe.components, **components})
    pipe.set_progress_bar_config(disable=True)
    return CogVideoXFamily(pipe)


@pytest.fixture(scope="module")
def dpm_family(tiny_family):
    """DPM-Solver++ (the CogVideoX-5b default in diffusers' docs): stochastic and two-step."""
    family = tiny_family("cogvideox")
    return _variant(family, scheduler=CogVideoXDPMScheduler.from_config(family.pipe.scheduler.config))


@pytest.fixture(scope="module")
def v15_family(tiny_family):
    """A CogVideoX 1.5 layout: latent frames patched in pairs, so 3 latent frames get 1 of padding."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, time_embed_dim=32,
            text_embed_dim=32, num_layers=2, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
            patch_size_t=2, temporal_compression_ratio=4, max_text_seq_length=226,
            use_rotary_positional_embeddings=True, patch_bias=False,
        ).eval()
    return _variant(tiny_family("cogvideox"), transformer=transformer)


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_sampler_matches_cogvideox_pipeline(tiny_family, cfg_scale):
    family = tiny_family("cogvideox")
    assert family.prediction == "v"
    assert_matches_pipeline(family, SHAPE, steps=4, cfg_scale=cfg_scale)


def test_cogvideox_batch_invariance(tiny_family):
    assert_batch_invariant(tiny_family("cogvideox"), SHAPE, steps=3, cfg_scales=(5.0, 1.0, 2.5))


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_sampler_matches_cogvideox_pipeline_with_dpm(dpm_family, cfg_scale):
    assert_matches_pipeline(dpm_family, SHAPE, steps=4, cfg_scale=cfg_scale)


def test_cogvideox_dpm_batch_invariance(dpm_family):
    assert_batch_invariant(dpm_family, SHAPE, steps=3, cfg_scales=(5.0, 1.0, 2.5))


def test_cogvideox_15_frame_padding_matches_pipeline(v15_family):
    assert_matches_pipeline(v15_family, SHAPE, steps=3, cfg_scale=4.0)


def test_cogvideox_guidance_ratio_is_v_prediction(tiny_family):
    family = tiny_family("cogvideox")
    timesteps = family.set_timesteps(4, SHAPE)
    abar = float(family.pipe.scheduler.alphas_cumprod[int(timesteps[2])])
    assert 0.0 < abar < 1.0
    assert family.guidance_ratio(2, timesteps[2]) == pytest.approx(math.sqrt((1.0 - abar) / abar), rel=1e-12)
    # The zero-terminal-SNR schedule starts at abar = 0: pure noise, an unbounded ratio.
    assert family.guidance_ratio(0, timesteps[0]) == math.inf


@pytest.mark.parametrize(
    ("shape", "field"),
    [(VideoShape(32, 32, 8), "frames"), (VideoShape(24, 32, 9), "height"), (VideoShape(32, 40, 9), "width")],
)
def test_cogvideox_rejects_shapes_the_pipeline_would_round(tiny_family, shape, field):
    with pytest.raises(ValueError, match=field):
        tiny_family("cogvideox").check_shape(shape)


def test_cogvideox_15_rejects_sizes_beyond_its_rotary_grid(v15_family):
    with pytest.raises(ValueError, match="height must be at most 32"):
        v15_family.check_shape(VideoShape(48, 32, 9))


@torch.no_grad()
def test_cogvideox_predict_takes_a_timestep_per_sample(tiny_family):
    """The reward model trains with a different t per sample: each row matches a scalar-t call."""
    family = tiny_family("cogvideox")
    cond, _ = family.encode_prompts(["a red circle", "a blue square"], None)
    latents = family.prepare_latents(SHAPE, [torch.Generator().manual_seed(s) for s in (1, 2)])
    timesteps = torch.tensor([999, 250])
    together = family.predict(family.transformer, latents, timesteps, cond, SHAPE)
    for i in range(2):
        alone = family.predict(family.transformer, latents[i : i + 1], timesteps[i], cond.select([i]), SHAPE)
        assert float((together[i] - alone[0]).abs().max()) <= 1e-5
    assert float((together[0] - together[1]).abs().max()) > 1e-3


def test_cogvideox_encode_gives_the_prepare_latents_layout(tiny_family, v15_family):
    frames = torch.rand(2, SHAPE.frames, SHAPE.height, SHAPE.width, 3, generator=torch.Generator().manual_seed(0))
    for family in (tiny_family("cogvideox"), v15_family):
        latents = family.encode(frames, SHAPE)
        noise = family.prepare_latents(SHAPE, [torch.Generator().manual_seed(s) for s in (1, 2)])
        assert latents.shape == noise.shape and latents.dtype == noise.dtype  # [B, F, C, H, W]
    # 1.5: one leading padding frame (a copy of the first), which decode drops again.
    assert torch.equal(latents[:, 0], latents[:, 1])


def test_diffusion_add_noise_uses_the_schedulers_alphas_cumprod(tiny_family):
    family = tiny_family("cogvideox")
    abar = family.pipe.scheduler.alphas_cumprod.float()  # the documented float32 computation
    gen = torch.Generator().manual_seed(10)
    x0, noise = torch.randn(3, 3, 16, 4, 4, generator=gen), torch.randn(3, 3, 16, 4, 4, generator=gen)
    t = torch.tensor([0.0, 0.5, 1.0])
    x_t = family.add_noise(x0, noise, t)
    for i, step in enumerate((0, round(0.5 * 999), 999)):
        expected = abar[step].sqrt() * x0[i] + (1 - abar[step]).sqrt() * noise[i]
        # float32 rounding (another op order, another CPU) is the only allowed difference.
        torch.testing.assert_close(x_t[i], expected, msg=f"step {step}")
    assert float(abar[999]) < 1e-3  # zero terminal SNR: t = 1 is (almost) pure noise


def test_cogvideox_decode_with_grad_is_decode_keeping_the_graph(tiny_family):
    assert_decode_with_grad_matches_decode(tiny_family("cogvideox"), SHAPE)

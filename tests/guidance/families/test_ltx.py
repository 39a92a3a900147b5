import inspect

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.families.ltx import LTXFamily
from tests.guidance.families.equivalence import (
    assert_batch_invariant, assert_decode_with_grad_matches_decode, assert_matches_pipeline,
)

# 2 x 4 latent tokens per latent frame, 3 latent frames (the tiny VAE: 16x spatial, 4x temporal).
SHAPE = VideoShape(height=32, width=64, frames=9)
#: A large decode-noise scale, so that drawing the decode-time noise differently from the pipeline
#: could not hide under the tolerance.
DECODE_NOISE = {"decode_timestep": 0.05, "decode_noise_scale": 0.3}


def noisy_decode_family(tiny_family) -> LTXFamily:
    return LTXFamily(tiny_family("ltx").pipe, **DECODE_NOISE)


def test_tiny_ltx_is_small_and_timestep_conditioned(tiny_dir, tiny_family):
    size = sum(f.stat().st_size for f in tiny_dir("ltx").rglob("*") if f.is_file())
    assert size < 2 * 1024 * 1024, size
    assert tiny_family("ltx").pipe.vae.config.timestep_conditioning


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_unguided_sampler_matches_ltx_pipeline(tiny_family, cfg_scale):
    assert_matches_pipeline(tiny_family("ltx"), SHAPE, steps=4, cfg_scale=cfg_scale)


def test_unguided_sampler_matches_ltx_pipeline_with_decode_noise(tiny_family):
    assert_matches_pipeline(
        noisy_decode_family(tiny_family), SHAPE, steps=3, cfg_scale=3.0, pipeline_kwargs=DECODE_NOISE
    )


def test_ltx_batch_invariance(tiny_family):
    assert_batch_invariant(tiny_family("ltx"), SHAPE, steps=3, cfg_scales=(3.0, 1.0, 5.0))


def test_ltx_batch_invariance_with_decode_noise(tiny_family):
    assert_batch_invariant(noisy_decode_family(tiny_family), SHAPE, steps=2, cfg_scales=(3.0, 1.0, 5.0))


def test_ltx_predict_takes_a_timestep_per_sample(tiny_family):
    family = tiny_family("ltx")
    generators = [torch.Generator("cpu").manual_seed(s) for s in (1, 2)]
    latents = family.prepare_latents(SHAPE, generators)
    cond, _ = family.encode_prompts(["a red circle", "a blue square"], None)
    timesteps = family.set_timesteps(4, SHAPE)
    with torch.no_grad():
        per_sample = family.predict(family.transformer, latents, timesteps[[0, 2]], cond, SHAPE)
        for b, i in enumerate((0, 2)):
            alone = family.predict(family.transformer, latents[b : b + 1], timesteps[i], cond.select([b]), SHAPE)
            assert float((per_sample[b] - alone[0]).abs().max()) <= 1e-5


def test_ltx_pipeline_cfg_needs_no_rescale():
    """The sampler's CFG is the pipeline's only while ``guidance_rescale`` defaults to 0."""
    from diffusers import LTXPipeline

    assert inspect.signature(LTXPipeline.__call__).parameters["guidance_rescale"].default == 0.0


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        (VideoShape(32, 64, 8), "frames"),
        (VideoShape(48, 64, 9), "height"),
        (VideoShape(32, 16, 9), "width"),
        (VideoShape(0, 64, 9), "height"),
    ],
)
def test_ltx_rejects_shapes_the_pipeline_would_round(tiny_family, shape, field):
    with pytest.raises(ValueError, match=field):
        tiny_family("ltx").check_shape(shape)


def test_ltx_encode_gives_the_packed_prepare_latents_layout(tiny_family):
    family = tiny_family("ltx")
    frames = torch.rand(2, SHAPE.frames, SHAPE.height, SHAPE.width, 3, generator=torch.Generator().manual_seed(0))
    latents = family.encode(frames, SHAPE)
    noise = family.prepare_latents(SHAPE, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert latents.shape == noise.shape == (2, 24, 8) and latents.dtype == noise.dtype
    decoded = family.decode(latents, SHAPE, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert decoded.shape == frames.shape


def test_ltx_decode_with_grad_is_decode_keeping_the_graph(tiny_family):
    assert_decode_with_grad_matches_decode(noisy_decode_family(tiny_family), SHAPE)

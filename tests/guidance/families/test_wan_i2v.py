"""Wan 2.1 image-to-video (``WanImageToVideoPipeline``): the adapter's image conditioning."""

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.sampler import SampleSpec, sample
from tests.guidance.families.equivalence import assert_i2v_matches_pipeline, test_image

SHAPE = VideoShape(height=32, width=32, frames=9)


def test_an_i2v_directory_loads_as_an_image_to_video_wan(tiny_family):
    family = tiny_family("wan-i2v")
    assert family.name == "wan" and family.image_input == "required"
    assert family.transformer.config.in_channels == 36 and family.pipe.vae.config.z_dim == 16
    assert tiny_family("wan").image_input == "none"


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_i2v_matches_wan_image_to_video_pipeline_alone_and_batched(tiny_family, cfg_scale):
    assert_i2v_matches_pipeline(tiny_family("wan-i2v"), SHAPE, steps=3, cfg_scale=cfg_scale)


def test_i2v_conditioning_is_per_row_and_latents_stay_16_channels(tiny_family):
    family = tiny_family("wan-i2v")
    image = family.encode_images([test_image(0, 32, 32)], SHAPE)
    assert image["image_embeds"].shape[0] == 1 and image["image_embeds"].dtype == family.dtype
    # 4 mask channels (the given first frame) + 16 latent channels of the first frame and zero frames.
    assert image["condition"].shape == (1, 20, 3, 4, 4)
    assert family.prepare_latents(SHAPE, [torch.Generator().manual_seed(0)]).shape == (1, 16, 3, 4, 4)


def test_a_wan_i2v_model_needs_an_image_for_every_sample(tiny_family):
    family = tiny_family("wan-i2v")
    specs = [SampleSpec("a", seed=1, image=test_image(0, 32, 32)), SampleSpec("b", seed=2)]
    with pytest.raises(ValueError, match="sample 1: .*image-to-video: every sample needs an image"):
        sample(family, specs, SHAPE, 2)
    cond, _ = family.encode_prompts(["a"], None)
    with pytest.raises(ValueError, match="image conditioning"):
        family.predict(family.transformer, torch.zeros(1, 16, 3, 4, 4), torch.tensor([500.0]), cond, SHAPE)


def test_a_text_to_video_wan_refuses_an_image(tiny_family):
    with pytest.raises(ValueError, match="sample 0: .*text-to-video only"):
        sample(tiny_family("wan"), [SampleSpec("a", image=test_image(0, 32, 32))], SHAPE, 2)


@pytest.mark.parametrize("config", [{"boundary_ratio": 0.875}, {"expand_timesteps": True}])
def test_wan_2_2_image_to_video_is_refused_for_now(tiny_family, config):
    from diffusers import WanImageToVideoPipeline

    from guidance.families.wan import WanFamily

    pipe = WanImageToVideoPipeline(**tiny_family("wan-i2v").pipe.components, **config)
    with pytest.raises(ValueError, match="Wan 2.2 image-to-video"):
        WanFamily(pipe)

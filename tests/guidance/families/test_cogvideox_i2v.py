"""CogVideoX image-to-video (``CogVideoXImageToVideoPipeline``): the image latents (a posterior sample from the
sample's generator) concatenated on the channels, the ``ofs`` embedding of 1.5, reward gradients."""

import pytest
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel

from guidance.families.base import VideoShape
from guidance.families.cogvideox import CogVideoXFamily
from guidance.nrg import GuidanceSpec
from guidance.reward_model import init_reward_model
from guidance.sampler import SampleSpec, sample
from tests.guidance.families.equivalence import assert_i2v_matches_pipeline, test_image

SHAPE = VideoShape(height=32, width=32, frames=9)


def _variant(family: CogVideoXFamily, **components) -> CogVideoXFamily:
    pipe = CogVideoXImageToVideoPipeline(**{**family.pipe.components, **components})
    pipe.set_progress_bar_config(disable=True)
    return CogVideoXFamily(pipe)


@pytest.fixture(scope="module")
def i2v(tiny_family):
    return tiny_family("cogvideox-i2v")


@pytest.fixture(scope="module")
def v15(i2v):
    """CogVideoX 1.5 image-to-video's layout: latent frames patched in pairs (3 latent frames get 1 of
    padding), no patch bias, and the ofs embedding."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=32, out_channels=16, time_embed_dim=32,
            ofs_embed_dim=32, text_embed_dim=32, num_layers=2, sample_width=4, sample_height=4, sample_frames=9,
            patch_size=2, patch_size_t=2, temporal_compression_ratio=4, max_text_seq_length=226,
            use_rotary_positional_embeddings=True, patch_bias=False,
        ).eval()
    return _variant(i2v, transformer=transformer)


def test_an_i2v_directory_loads_as_an_image_to_video_cogvideox(i2v, tiny_family):
    assert i2v.name == "cogvideox" and i2v.image_input == "required" and not i2v.video_input
    assert i2v.transformer.config.in_channels == 32
    assert i2v.prepare_latents(SHAPE, [torch.Generator().manual_seed(0)]).shape == (1, 3, 16, 4, 4)
    assert tiny_family("cogvideox").image_input == "none"


@pytest.mark.parametrize("cfg_scale", [1.0, 6.0])
def test_unguided_i2v_matches_cogvideox_image_to_video_pipeline_alone_and_batched(i2v, cfg_scale):
    assert_i2v_matches_pipeline(i2v, SHAPE, steps=3, cfg_scale=cfg_scale)


def test_with_dpm_solver(i2v):
    """DPM-Solver++ also draws noise every step from the sample's generator, after the image's and the
    initial noise's draws."""
    family = _variant(i2v, scheduler=CogVideoXDPMScheduler.from_config(i2v.pipe.scheduler.config))
    assert_i2v_matches_pipeline(family, SHAPE, steps=3, cfg_scale=6.0)


def test_cogvideox_15_i2v_with_ofs_and_frame_padding(v15):
    assert v15.transformer.config.ofs_embed_dim == 32 and v15._latent_frames(SHAPE) == (4, 1)
    assert_i2v_matches_pipeline(v15, SHAPE, steps=3, cfg_scale=6.0)


def test_every_sample_needs_an_image_and_its_latents_come_from_its_generator(i2v):
    with pytest.raises(ValueError, match="sample 1: .*image-to-video: every sample needs an image"):
        sample(i2v, [SampleSpec("a", seed=1, image=test_image(0, 32, 32)), SampleSpec("b", seed=2)], SHAPE, 2)
    image = test_image(0, 32, 32)
    one, two = (i2v.encode_images([image], SHAPE, [torch.Generator().manual_seed(s)])["image_latents"] for s in (1, 2))
    assert one.shape == (1, 3, 16, 4, 4) and (one[:, 1:] == 0).all() and (one - two).abs().max() > 0
    with pytest.raises(ValueError, match="generator"):
        i2v.encode_images([image], SHAPE)
    cond, _ = i2v.encode_prompts(["a"], None)
    with pytest.raises(ValueError, match="image conditioning"):
        i2v.predict(i2v.transformer, torch.zeros(1, 3, 16, 4, 4), torch.tensor([500]), cond, SHAPE)


def test_reward_gradient_guidance_raises_the_objective_of_an_i2v_row(i2v):
    """The reward's trunk is the image-to-video transformer's: it sees the image latents too."""
    reward = init_reward_model(i2v, ["a", "b"], num_blocks=1, seed=0)
    assert reward.trunk.config.in_channels == 32

    def spec(guidance=None, seed=3, image_seed=0):
        return SampleSpec("a green square", seed=seed, cfg_scale=6.0, guidance=guidance,
                          image=test_image(image_seed, 32, 32))

    unguided = sample(i2v, [spec()], SHAPE, 4, reward)
    finals = [sample(i2v, [spec(GuidanceSpec({"a": 1.0}, strength=s, window=(0.0, 1.0), mode="sum"))], SHAPE, 4,
                     reward).rewards[0, 0].item() for s in (20.0, 80.0)]
    assert unguided.rewards[0, 0].item() < finals[0] < finals[1], (unguided.rewards[0, 0].item(), finals)
    guided = spec(GuidanceSpec({"a": 1.0}, strength=80.0, window=(0.0, 1.0), mode="sum"))
    together = sample(i2v, [spec(seed=9, image_seed=1), guided], SHAPE, 4, reward)
    assert (together.frames[1] - sample(i2v, [guided], SHAPE, 4, reward).frames[0]).abs().max() <= 1e-4

"""Wan image-to-video (``WanImageToVideoPipeline``): the adapter's image conditioning, for Wan 2.1 I2V and
Wan 2.2's I2V-A14B (two experts) and TI2V-5B (the image's latents as the first latent frame)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from guidance.families.base import VideoShape
from guidance.families.wan import WanFamily
from guidance.nrg import GuidanceSpec
from guidance.reward_model import init_reward_model
from guidance.sampler import SampleSpec, sample
from tests.guidance.families.equivalence import (
    PROMPTS,
    TOLERANCE,
    assert_i2v_matches_pipeline,
    pipeline_frames,
    test_image,
)

SHAPE = VideoShape(height=32, width=32, frames=9)
#: Wan 2.2's tiny image-to-video pipelines; TI2V's 16x VAE and 2x2 patches need multiples of 32, and a
#: 32x64 video gives it 2 tokens per latent frame.
A14B, TI2V = "wan-i2v-a14b", "wan-ti2v-5b"
WAN22_SHAPE = VideoShape(height=32, width=64, frames=9)
#: 4 steps of the tiny schedule (timesteps 1000, 858, 602, 9) run two on each A14B expert (boundary 0.8).
STEPS = 4


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


def test_a_wan_i2v_pipeline_without_its_first_transformer_is_refused(tiny_family):
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(**{**tiny_family(A14B).pipe.components, "transformer": None}, boundary_ratio=1.0)
    with pytest.raises(ValueError, match="without `transformer`"):
        WanFamily(pipe)


def test_wan_2_2_i2v_directories_load_as_image_to_video_wan(tiny_family):
    a14b, ti2v = tiny_family(A14B), tiny_family(TI2V)
    assert a14b.image_input == ti2v.image_input == "required"
    # I2V-A14B: two experts on 16 + 20 channels and no CLIP image embedding; both run in a 4-step schedule.
    assert len(a14b.denoisers) == 2 and a14b.transformer.config.image_dim is None
    assert a14b.schedule(STEPS, WAN22_SHAPE).experts == (0, 0, 1, 1)
    image = a14b.encode_images([test_image(0, 64, 32)], WAN22_SHAPE)
    assert set(image) == {"condition"} and image["condition"].shape == (1, 20, 3, 4, 8)
    # TI2V: the first frame's 48-channel latents and the mask that puts them in the first latent frame.
    image = ti2v.encode_images([test_image(0, 64, 32)], WAN22_SHAPE)
    assert set(image) == {"condition", "mask"} and image["condition"].shape == (1, 48, 1, 2, 4)
    assert image["mask"].shape == (1, 1, 3, 2, 4)
    assert image["mask"][:, :, 0].eq(0).all() and image["mask"][:, :, 1:].eq(1).all()
    assert ti2v.prepare_latents(WAN22_SHAPE, [torch.Generator().manual_seed(0)]).shape == (1, 48, 3, 2, 4)


@pytest.mark.parametrize("name", [A14B, TI2V])
@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_wan_2_2_i2v_matches_wan_image_to_video_pipeline_alone_and_batched(tiny_family, name, cfg_scale):
    assert_i2v_matches_pipeline(tiny_family(name), WAN22_SHAPE, steps=STEPS, cfg_scale=cfg_scale)


@pytest.mark.parametrize("name", [A14B, TI2V])
def test_wan_2_2_i2v_with_unipc_matches_wan_image_to_video_pipeline(tiny_family, name):
    """With the released directories' scheduler (UniPC on flow sigmas: per-run history, so the pipeline's own
    step on the whole batch), which steps TI2V's first latent frame as any other."""
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    tiny = tiny_family(name).pipe
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = WanImageToVideoPipeline(**{**tiny.components, "scheduler": scheduler},
                                   boundary_ratio=tiny.config.boundary_ratio,
                                   expand_timesteps=tiny.config.expand_timesteps)
    pipe.set_progress_bar_config(disable=True)
    family = WanFamily(pipe)
    assert not family.euler_scheduler
    assert_i2v_matches_pipeline(family, WAN22_SHAPE, steps=STEPS, cfg_scale=4.0)


def test_a14b_runs_each_expert_at_its_steps_with_the_one_cfg_scale(tiny_family):
    """A sample's CFG scale is both experts' (diffusers' default, ``guidance_scale_2`` = ``guidance_scale``):
    equal to the pipeline given that second scale explicitly, unlike one given another; and the frames need
    the low-noise expert at its steps: one expert throughout gives others."""
    family = tiny_family(A14B)
    image = test_image(3, 64, 32)
    spec = SampleSpec(PROMPTS[0], negative_prompt="blurry", seed=5, cfg_scale=4.0, image=image)
    ours = sample(family, [spec], WAN22_SHAPE, STEPS).frames[0].numpy()

    def theirs(scale_2: float) -> np.ndarray:
        return pipeline_frames(family.pipe, WAN22_SHAPE, STEPS, 5, 4.0, {"guidance_scale_2": scale_2}, image=image,
                               prompt=PROMPTS[0], negative_prompt="blurry")

    assert float(np.abs(ours - theirs(4.0)).max()) <= TOLERANCE
    assert float(np.abs(ours - theirs(1.5)).max()) > 1e-3
    one_expert = WanFamily(family.pipe)
    one_expert.denoiser = lambda timestep: family.pipe.transformer
    assert float(np.abs(sample(one_expert, [spec], WAN22_SHAPE, STEPS).frames[0].numpy() - ours).max()) > 1e-3


def test_ti2v_shows_the_denoiser_the_image_in_the_first_latent_frame_and_ends_with_it(tiny_family):
    """Whatever the latents hold in the first latent frame, the denoiser sees the image's latents there at
    timestep 0; a finished row (and a clean estimate) has them there to the bit."""
    family = tiny_family(TI2V)
    cond, _ = family.encode_prompts([PROMPTS[0]], None)
    cond = cond.with_image(family.encode_images([test_image(1, 64, 32)], WAN22_SHAPE), (True,))
    latents = family.prepare_latents(WAN22_SHAPE, [torch.Generator().manual_seed(0)])
    moved = latents.clone()
    moved[:, :, 0] += 5.0
    t = torch.tensor([600.0])
    pred = family.predict(family.transformer, latents, t, cond, WAN22_SHAPE)
    assert torch.equal(family.predict(family.transformer, moved, t, cond, WAN22_SHAPE), pred)
    moved[:, :, 1] += 5.0
    assert not torch.equal(family.predict(family.transformer, moved, t, cond, WAN22_SHAPE), pred)
    first = cond.image["condition"][:, :, 0]
    assert torch.equal(family.final_latents(latents, cond)[:, :, 0], first)
    assert torch.equal(family.clean_estimate(latents, torch.tensor([0.6]), cond, WAN22_SHAPE)[:, :, 0], first)
    out = sample(family, [SampleSpec(PROMPTS[0], seed=2, image=test_image(1, 64, 32))], WAN22_SHAPE, 2)
    assert torch.equal(out.latents[:, :, 0], first)


@pytest.mark.parametrize("name", [A14B, TI2V])
def test_reward_gradient_guidance_raises_the_objective_of_a_wan_2_2_i2v_row(tiny_family, name):
    """A latent reward whose trunk is the (first) transformer's, so it sees the image as the denoiser does;
    a guided row beside an unguided one of another image is as alone, and on TI2V it still ends with the
    image's first latent frame."""
    family = tiny_family(name)
    reward = init_reward_model(family, ["a", "b"], num_blocks=1, seed=0)
    spec = SampleSpec(PROMPTS[2], seed=3, cfg_scale=3.0, image=test_image(0, 64, 32))

    def guided(strength: float) -> SampleSpec:
        return replace(spec, guidance=GuidanceSpec({"a": 1.0}, strength=strength, window=(0.0, 1.0), mode="sum"))

    unguided = sample(family, [spec], WAN22_SHAPE, STEPS, reward)
    finals = [sample(family, [guided(s)], WAN22_SHAPE, STEPS, reward).rewards[0, 0].item() for s in (5.0, 20.0)]
    assert unguided.rewards[0, 0].item() < finals[0] < finals[1], (unguided.rewards[0, 0].item(), finals)
    other = replace(spec, seed=9, image=test_image(1, 64, 32))
    together = sample(family, [other, guided(20.0)], WAN22_SHAPE, STEPS, reward)
    assert (together.frames[1] - sample(family, [guided(20.0)], WAN22_SHAPE, STEPS, reward).frames[0]).abs().max() \
        <= TOLERANCE
    assert (together.frames[0] - sample(family, [other], WAN22_SHAPE, STEPS, reward).frames[0]).abs().max() <= TOLERANCE
    if name == TI2V:
        assert torch.equal(together.latents[1, :, 0], unguided.latents[0, :, 0])

"""LTX-Video image-to-video (``LTXImageToVideoPipeline``): the first latent frame is the image's."""

from dataclasses import replace

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.families.ltx import LTXFamily
from guidance.nrg import GuidanceSpec
from guidance.rewards import CallableReward
from guidance.sampler import SampleSpec, sample
from tests.guidance.families.equivalence import TOLERANCE, assert_i2v_matches_pipeline, test_image
from tests.guidance.families.test_ltx import DECODE_NOISE

SHAPE = VideoShape(height=32, width=64, frames=9)


def i2v_pipe(family):
    from diffusers import LTXImageToVideoPipeline

    pipe = LTXImageToVideoPipeline(**family.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_unguided_i2v_matches_ltx_image_to_video_pipeline_alone_and_batched(tiny_family, cfg_scale):
    family = tiny_family("ltx")
    assert family.image_input == "optional"
    assert_i2v_matches_pipeline(family, SHAPE, steps=3, cfg_scale=cfg_scale, pipe=i2v_pipe(family))


def test_with_decode_noise(tiny_family):
    family = LTXFamily(tiny_family("ltx").pipe, **DECODE_NOISE)
    assert_i2v_matches_pipeline(family, SHAPE, steps=2, cfg_scale=3.0, pipe=i2v_pipe(family),
                                pipeline_kwargs=DECODE_NOISE)


def test_an_i2v_directory_loads_and_text_and_image_rows_share_a_batch(tiny_family):
    """An LTXImageToVideoPipeline directory serves both; each row of a mixed batch is as alone (and a
    text-to-video row as on the text-to-video pipeline)."""
    family, t2v = tiny_family("ltx-i2v"), tiny_family("ltx")
    assert type(family.pipe).__name__ == "LTXImageToVideoPipeline" and family.image_input == "optional"
    text = SampleSpec("a red circle", seed=4, cfg_scale=3.0)
    image = SampleSpec("a blue square", seed=5, cfg_scale=1.0, image=test_image(2, 64, 32))
    together = sample(family, [text, image, SampleSpec("a red circle", seed=6)], SHAPE, 3).frames
    assert (together[0] - sample(t2v, [text], SHAPE, 3).frames[0]).abs().max() <= TOLERANCE
    assert (together[1] - sample(family, [image], SHAPE, 3).frames[0]).abs().max() <= TOLERANCE


def test_the_first_frame_is_held_through_guidance_and_search(tiny_family):
    """A reward that pushes every latent moves the generated frames but not the image's: its tokens get no
    velocity and no gradient, so they stay the image's latents to the last bit."""
    family = tiny_family("ltx")
    reward = CallableReward(lambda latents, t, embeds: latents.float().mean(dim=(1, 2))[:, None], ["a"])
    spec = SampleSpec("a red circle", seed=4, cfg_scale=3.0, image=test_image(3, 64, 32))
    first = slice(0, 2 * 4)  # the first latent frame's tokens: a 2 x 4 latent grid per frame

    def starts(rows: int) -> torch.Tensor:
        """The initial latents of ``rows`` particles, drawn one after the other from the sample's generator."""
        cond = family.encode_prompts(["a"] * rows, None)[0]
        images = family.encode_images([spec.image] * rows, SHAPE)
        generator = torch.Generator().manual_seed(4)  # shared by the particles, as in the batch
        return family.prepare_conditioned_latents(SHAPE, [generator] * rows, cond.with_image(images, (True,) * rows))

    guided = sample(family, [replace(spec, guidance=GuidanceSpec({"a": 1.0}, strength=50.0, window=(0.0, 1.0),
                                                                 mode="sum"))], SHAPE, 3, reward)
    assert torch.equal(guided.latents[0, first], starts(1)[0, first])
    assert guided.rewards[0, 0] > sample(family, [spec], SHAPE, 3, reward).rewards[0, 0]
    # Each particle draws its own sample of the image's latents; the kept one ends with its own.
    searched = sample(family, [replace(spec, guidance=GuidanceSpec({"a": 1.0}, mode="best_of_n", particles=3,
                                                                   window=(0.0, 1.0)))], SHAPE, 3, reward)
    assert any(torch.equal(searched.latents[0, first], start[first]) for start in starts(3))

"""Video-to-video (SDEdit) in the flow families: the video's latents noised to the start of the truncated
schedule, then its remaining steps, alone and beside a text-to-video row that runs all of them."""

import pytest
import torch

from guidance.families.base import VideoShape
from guidance.sampler import SampleSpec, sample
from guidance.schedule import Schedule
from guidance.video_to_video import DEFAULT_DENOISE_STRENGTH, denoise_start
from tests.guidance.families.equivalence import assert_v2v_matches, by_hand_v2v, test_image, test_video

WAN_SHAPE = VideoShape(height=32, width=32, frames=9)
LTX_SHAPE = VideoShape(height=32, width=64, frames=9)


def wan_v2v_reference(family, shape: VideoShape, steps: int, cfg_scale: float, strength: float):
    """diffusers' ``WanVideoToVideoPipeline`` on the family's components."""
    from diffusers import WanVideoToVideoPipeline

    from guidance.families.wan import _clean_prompts_without_ftfy

    p = family.pipe
    pipe = WanVideoToVideoPipeline(tokenizer=p.tokenizer, text_encoder=p.text_encoder, transformer=p.transformer,
                                   vae=p.vae, scheduler=p.scheduler)
    pipe.set_progress_bar_config(disable=True)
    _clean_prompts_without_ftfy(pipe)  # it cleans prompts with ftfy without checking it is installed

    def reference(video, prompt, negative, seed):
        return pipe(video=video, prompt=prompt, negative_prompt=negative, height=shape.height, width=shape.width,
                    num_inference_steps=steps, guidance_scale=cfg_scale, strength=strength,
                    generator=torch.Generator("cpu").manual_seed(seed), output_type="np").frames[0]

    return reference


def unipc_wan(family):
    """The tiny Wan with the scheduler of the released Wan 2.1 directories (UniPC on flow sigmas), which
    keeps per-run history: its batches step together."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from guidance.families.wan import WanFamily

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(**{**family.pipe.components, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    return WanFamily(pipe)


def test_the_start_is_diffusers_get_timesteps():
    assert [denoise_start(10, s) for s in (1.0, 0.8, 0.7, 0.35, 0.1)] == [0, 2, 3, 7, 9]
    assert denoise_start(3, DEFAULT_DENOISE_STRENGTH) == 1  # int(3 * 0.8) = 2 steps run
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"denoise_strength must be in \(0, 1\]"):
            denoise_start(10, bad)
    with pytest.raises(ValueError, match="num_inference_steps \\* denoise_strength must be at least 1"):
        denoise_start(3, 0.3)


def test_a_truncated_schedule_is_the_tail_of_the_full_one():
    full = Schedule(timesteps=(1000.0, 750.0, 500.0, 250.0), timestep_dtype=torch.float32,
                    noise_levels=(1.0, 0.75, 0.5, 0.25), ratios=(9.0, 3.0, 1.0, 0.3), dt=(-0.25,) * 4,
                    experts=(0, 0, 0, 0))
    tail = full.truncated(1)
    assert tail.steps == 3 and tail.start == 1 and tail.noise_levels == (0.75, 0.5, 0.25) and tail.dt == (-0.25,) * 3
    assert full.truncated(0) is full
    with pytest.raises(ValueError, match="cannot start at step 4"):
        full.truncated(4)


@pytest.mark.parametrize(("cfg_scale", "strength"), [(1.0, 0.7), (4.0, 0.5)])
def test_wan_equals_wan_video_to_video_pipeline(tiny_family, cfg_scale, strength):
    family = tiny_family("wan")
    assert family.video_input
    assert_v2v_matches(family, WAN_SHAPE, steps=4, cfg_scale=cfg_scale, strength=strength,
                       reference=wan_v2v_reference(family, WAN_SHAPE, 4, cfg_scale, strength))


def test_wan_with_unipc_equals_wan_video_to_video_pipeline(tiny_family):
    """A multistep scheduler starts its run at the video's step (its batch steps together, so a text-to-video
    row cannot run beside it; alone it equals the pipeline)."""
    family = unipc_wan(tiny_family("wan"))
    assert not family.euler_scheduler
    reference = wan_v2v_reference(family, WAN_SHAPE, 4, 4.0, 0.5)
    video = test_video(3, WAN_SHAPE)
    spec = SampleSpec("a red circle", negative_prompt="blurry", seed=3, cfg_scale=4.0, video=video,
                      denoise_strength=0.5)
    ours = sample(family, [spec], WAN_SHAPE, 4).frames[0].numpy()
    assert abs(ours - reference(video, "a red circle", "blurry", 3)).max() <= 1e-4
    with pytest.raises(ValueError, match="must start at the same step"):
        sample(family, [spec, SampleSpec("a blue square", seed=4)], WAN_SHAPE, 4)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_ltx_equals_the_pipeline_loop_from_the_noised_video(tiny_family, cfg_scale):
    family = tiny_family("ltx")
    pipe = family.pipe
    vae = pipe.vae
    reference = by_hand_v2v(
        family, LTX_SHAPE, 4, 0.6, {"guidance_scale": cfg_scale},
        normalise=lambda z: pipe._normalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor),
        pack=lambda z: pipe._pack_latents(z, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size))
    assert_v2v_matches(family, LTX_SHAPE, steps=4, cfg_scale=cfg_scale, strength=0.6, reference=reference)


def test_hunyuan_equals_the_pipeline_loop_from_the_noised_video(tiny_family):
    family = tiny_family("hunyuan")
    scale = family.pipe.vae.config.scaling_factor
    reference = by_hand_v2v(family, WAN_SHAPE, 4, 0.75, {"true_cfg_scale": 2.0}, normalise=lambda z: z * scale)
    assert_v2v_matches(family, WAN_SHAPE, steps=4, cfg_scale=2.0, strength=0.75, reference=reference)


def test_ltx_image_and_video_rows_share_a_batch(tiny_family):
    family = tiny_family("ltx")
    image = SampleSpec("a blue square", seed=5, image=test_image(2, 64, 32))
    video = SampleSpec("a red circle", seed=6, video=test_video(1, LTX_SHAPE), denoise_strength=0.5)
    together = sample(family, [video, image], LTX_SHAPE, 4).frames
    for i, spec in enumerate((video, image)):
        assert (together[i] - sample(family, [spec], LTX_SHAPE, 4).frames[0]).abs().max() <= 1e-4


def test_strength_one_is_text_to_video(tiny_family):
    """At strength 1 the video's latents are multiplied by 1 - sigma = 0 (the first sigma is 1): the sample is
    the text-to-video one, to the bit (each alone: two rows of one batch may round differently)."""
    family = tiny_family("wan")
    text = SampleSpec("a red circle", seed=2, cfg_scale=1.0)
    from_video = SampleSpec("a red circle", seed=2, cfg_scale=1.0, video=test_video(0, WAN_SHAPE), denoise_strength=1.0)
    assert torch.equal(sample(family, [text], WAN_SHAPE, 3).frames, sample(family, [from_video], WAN_SHAPE, 3).frames)


def test_refusals_name_the_sample(tiny_family):
    video = test_video(0, WAN_SHAPE)
    with pytest.raises(ValueError, match="sample 0: .*cannot start from a video"):
        sample(tiny_family("wan-i2v"), [SampleSpec("a", image=test_image(0, 32, 32), video=video)], WAN_SHAPE, 2)
    with pytest.raises(ValueError, match="sample 0: .*cannot start from a video"):
        sample(tiny_family("cogvideox"), [SampleSpec("a", video=video)], VideoShape(16, 16, 9), 2)
    with pytest.raises(ValueError, match="sample 1: denoise_strength applies to video-to-video"):
        sample(tiny_family("wan"), [SampleSpec("a"), SampleSpec("b", denoise_strength=0.5)], WAN_SHAPE, 2)
    with pytest.raises(ValueError, match="not both"):
        sample(tiny_family("ltx"), [SampleSpec("a", image=test_image(0, 64, 32), video=test_video(0, LTX_SHAPE))],
               LTX_SHAPE, 2)


def test_a_video_row_added_with_a_text_row_leaves_first_as_it_would_alone(tiny_family):
    """In a server's batch a video row may join beside rows at any step: it runs its own truncated schedule
    from its first step, finishes before a text-to-video row added with it, and each equals its run alone."""
    from guidance.batch_state import BatchState

    family = tiny_family("wan")
    text = SampleSpec("a blue square", seed=4, cfg_scale=4.0)
    video = SampleSpec("a red circle", seed=5, cfg_scale=1.0, video=test_video(2, WAN_SHAPE), denoise_strength=0.5)
    batch = BatchState(family, WAN_SHAPE)
    batch.add([text, video], 4, ["text", "video"])
    progress = [batch.step() for _ in range(2)][-1]
    assert [(p.id, p.step, p.steps) for p in progress] == [("text", 2, 4), ("video", 2, 2)]
    assert batch.finished() == ["video"]
    first = batch.pop_finished()
    batch.add([SampleSpec("a green square", seed=6)], 4, ["late"])  # a newcomer joins the text row mid-run
    batch.step(), batch.step()
    second = batch.pop_finished()
    assert second.ids == ["text"]
    for result, spec in ((first, video), (second, text)):
        alone = sample(family, [spec], WAN_SHAPE, 4).frames[0]
        assert (result.frames[0] - alone).abs().max() <= 1e-4

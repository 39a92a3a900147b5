import pytest
import torch

from guidance.families.base import VideoShape
from guidance.families.hunyuan import EMBEDDED_GUIDANCE_SCALE, PROMPT_TEMPLATE
from tests.guidance.families.equivalence import (
    PROMPTS, assert_batch_invariant, assert_decode_with_grad_matches_decode, assert_matches_pipeline,
)

SHAPE = VideoShape(height=32, width=32, frames=9)


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_unguided_sampler_matches_hunyuan_pipeline(tiny_family, cfg_scale):
    # A request's cfg_scale is HunyuanVideo's true CFG; the embedded guidance stays at its default.
    assert_matches_pipeline(
        tiny_family("hunyuan"), SHAPE, steps=4, cfg_scale=cfg_scale,
        pipeline_kwargs={"true_cfg_scale": cfg_scale, "guidance_scale": EMBEDDED_GUIDANCE_SCALE},
    )


def test_hunyuan_batch_invariance(tiny_family):
    assert_batch_invariant(tiny_family("hunyuan"), SHAPE, steps=3, cfg_scales=(4.0, 1.0, 2.5))


def test_hunyuan_cfg_is_true_cfg_off_by_default(tiny_family):
    family = tiny_family("hunyuan")
    assert family.default_cfg == 1.0
    assert not family.uses_cfg(family.default_cfg)
    assert family.uses_cfg(1.5)


def test_hunyuan_template_crop_keeps_the_whole_prompt(tiny_family):
    """The tiny tokenizer spends exactly ``crop_start`` tokens on the template's system part, so the
    cropped embeddings start at the user's prompt."""
    tokenizer = tiny_family("hunyuan").pipe.tokenizer
    system_part = PROMPT_TEMPLATE["template"].split("{}")[0]
    assert len(tokenizer(system_part).input_ids) == PROMPT_TEMPLATE["crop_start"]


def test_hunyuan_prompt_encoding_is_batch_independent(tiny_family):
    family = tiny_family("hunyuan")
    together, _ = family.encode_prompts(list(PROMPTS), None)
    assert together.embeds.shape[1] == together.extras["attention_mask"].shape[1] == 256
    for i, prompt in enumerate(PROMPTS):
        alone, _ = family.encode_prompts([prompt], None)
        assert torch.allclose(together.select([i]).embeds, alone.embeds, atol=1e-5)
        for key, value in alone.extras.items():
            assert torch.allclose(together.extras[key][i : i + 1], value, atol=1e-5), key


@pytest.mark.parametrize(
    ("shape", "field"),
    [(VideoShape(32, 32, 8), "frames"), (VideoShape(24, 32, 9), "height"), (VideoShape(32, 40, 9), "width")],
)
def test_hunyuan_rejects_shapes_the_pipeline_would_round(tiny_family, shape, field):
    with pytest.raises(ValueError, match=field):
        tiny_family("hunyuan").check_shape(shape)


def test_hunyuan_encode_gives_the_prepare_latents_layout(tiny_family):
    family = tiny_family("hunyuan")
    frames = torch.rand(2, SHAPE.frames, SHAPE.height, SHAPE.width, 3, generator=torch.Generator().manual_seed(0))
    latents = family.encode(frames, SHAPE)
    noise = family.prepare_latents(SHAPE, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert latents.shape == noise.shape and latents.dtype == noise.dtype
    # Flow matching: add_noise is the linear interpolation x_t = (1 - t) x_0 + t noise.
    t = torch.tensor([0.3, 0.9])
    assert torch.allclose(family.add_noise(latents, noise, t), (1 - t).view(-1, 1, 1, 1, 1) * latents
                          + t.view(-1, 1, 1, 1, 1) * noise, atol=1e-6)


def test_hunyuan_decode_with_grad_is_decode_keeping_the_graph(tiny_family):
    assert_decode_with_grad_matches_decode(tiny_family("hunyuan"), SHAPE)

"""Shared checks every family's tests run: the unguided sampler equals the diffusers pipeline, and
a sample's frames do not depend on its batch-mates."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.sampler import SampleSpec, sample

TOLERANCE = 1e-4
PROMPTS = ("a red circle moving left", "a blue square moving up", "a yellow triangle moving down quickly")


def assert_matches_pipeline(
    family: PipelineFamily,
    shape: VideoShape,
    steps: int,
    cfg_scale: float,
    seed: int = 7,
    pipeline_kwargs: dict[str, Any] | None = None,
) -> None:
    """``sample`` without guidance gives the frames of ``pipe(..., generator=manual_seed(seed))``.

    The pipeline gets ``guidance_scale=cfg_scale`` unless ``pipeline_kwargs`` says otherwise (as
    HunyuanVideo's, whose real CFG scale is ``true_cfg_scale``)."""
    prompt, negative = PROMPTS[0], "blurry"
    ours = sample(
        family, [SampleSpec(prompt, negative_prompt=negative, seed=seed, cfg_scale=cfg_scale)], shape, steps
    ).frames[0].numpy()
    theirs = family.pipe(
        prompt=prompt,
        negative_prompt=negative,
        height=shape.height,
        width=shape.width,
        num_frames=shape.frames,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
        **{"guidance_scale": cfg_scale, **(pipeline_kwargs or {})},
    ).frames[0]
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = float(np.abs(ours - theirs).max())
    assert diff <= TOLERANCE, f"max abs diff {diff} vs the diffusers pipeline"
    # The check must be able to fail: another seed gives other frames.
    other = sample(family, [SampleSpec(prompt, negative_prompt=negative, seed=seed + 1, cfg_scale=cfg_scale)],
                   shape, steps).frames[0].numpy()
    assert float(np.abs(other - theirs).max()) > 1e-3


def assert_batch_invariant(family: PipelineFamily, shape: VideoShape, steps: int, cfg_scales: tuple[float, ...]) -> None:
    """Each sample of a mixed batch (prompts, seeds, CFG scales) equals the same sample run alone."""
    specs = [
        SampleSpec(PROMPTS[i % len(PROMPTS)], seed=100 + i, cfg_scale=cfg_scales[i % len(cfg_scales)])
        for i in range(3)
    ]
    together = sample(family, specs, shape, steps).frames
    for i, spec in enumerate(specs):
        alone = sample(family, [spec], shape, steps).frames[0]
        diff = float((together[i] - alone).abs().max())
        assert diff <= TOLERANCE, f"sample {i} differs by {diff} when batched"


def assert_decode_with_grad_matches_decode(family: PipelineFamily, shape: VideoShape) -> None:
    """``decode_with_grad`` gives ``decode``'s frames and a gradient with respect to the latents that
    reaches every row; ``decode`` builds no graph even where grad mode is on."""
    latents = family.prepare_latents(shape, [torch.Generator().manual_seed(s) for s in (3, 4)])

    def generators() -> list[torch.Generator]:  # fresh each time: a VAE may draw decode-time noise
        return [torch.Generator().manual_seed(s) for s in (5, 6)]

    x = latents.detach().clone().requires_grad_(True)
    kept = family.decode_with_grad(x, shape, generators())
    plain = family.decode(x, shape, generators())
    assert kept.requires_grad and not plain.requires_grad
    assert kept.dtype == plain.dtype == torch.float32 and kept.shape == plain.shape
    assert float((kept.detach() - plain).abs().max()) <= 1e-6
    with torch.no_grad():  # the graph is kept even under a caller's no_grad: the method asks for it
        assert family.decode_with_grad(x, shape, generators()).requires_grad
    (grad,) = torch.autograd.grad((kept * torch.linspace(0, 1, kept[0].numel()).view_as(kept[0])).sum(), x)
    assert torch.isfinite(grad).all()
    assert all(float(grad[row].abs().sum()) > 0 for row in range(grad.shape[0]))


def test_image(seed: int, width: int, height: int):
    """A deterministic random RGB image (PIL) of this size."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


test_image.__test__ = False  # a helper, not a test


def assert_i2v_matches_pipeline(
    family: PipelineFamily,
    shape: VideoShape,
    steps: int,
    cfg_scale: float,
    pipe: Any = None,
    seed: int = 7,
    pipeline_kwargs: dict[str, Any] | None = None,
) -> None:
    """Image-to-video: ``sample`` without guidance, alone and batched with another image-to-video
    request (another image, prompt, seed and CFG scale), gives the frames of the family's diffusers
    image-to-video pipeline (``pipe``, default the family's own) for the same image, prompt and seed."""
    image, other_image = test_image(seed, shape.width, shape.height), test_image(seed + 1, shape.width, shape.height)
    prompt, negative = PROMPTS[0], "blurry"
    spec = SampleSpec(prompt, negative_prompt=negative, seed=seed, cfg_scale=cfg_scale, image=image)
    other = SampleSpec(PROMPTS[1], seed=seed + 11, cfg_scale=cfg_scale + 1.5, image=other_image)
    alone = sample(family, [spec], shape, steps).frames[0].numpy()
    batched = sample(family, [other, spec], shape, steps).frames[1].numpy()
    theirs = (pipe or family.pipe)(
        image=image,
        prompt=prompt,
        negative_prompt=negative,
        height=shape.height,
        width=shape.width,
        num_frames=shape.frames,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
        **{"guidance_scale": cfg_scale, **(pipeline_kwargs or {})},
    ).frames[0]
    assert alone.shape == theirs.shape, (alone.shape, theirs.shape)
    for name, ours in (("alone", alone), ("batched", batched)):
        diff = float(np.abs(ours - theirs).max())
        assert diff <= TOLERANCE, f"{name}: max abs diff {diff} vs the diffusers image-to-video pipeline"
    # The check must be able to fail: another image gives other frames.
    moved = sample(family, [SampleSpec(prompt, negative_prompt=negative, seed=seed, cfg_scale=cfg_scale,
                                       image=other_image)], shape, steps).frames[0].numpy()
    assert float(np.abs(moved - theirs).max()) > 1e-3

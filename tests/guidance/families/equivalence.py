"""Shared checks every family's tests run: the unguided sampler equals the diffusers pipeline, and
a sample's frames do not depend on its batch-mates."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.sampler import SampleSpec, sample

TOLERANCE = 1e-4
PROMPTS = ("a red circle moving left", "a blue square moving up", "a yellow triangle moving down quickly")


def pipeline_frames(pipe, shape, steps: int, seed: int, cfg_scale: float, pipeline_kwargs: dict | None,
                    **inputs) -> np.ndarray:
    """The diffusers pipeline's own frames for ``inputs`` (prompt, image, ...), at ``shape`` and ``steps``,
    seeded as a user would seed it, with ``guidance_scale=cfg_scale`` unless ``pipeline_kwargs`` says otherwise."""
    return pipe(
        **inputs,
        height=shape.height,
        width=shape.width,
        num_frames=shape.frames,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
        **{"guidance_scale": cfg_scale, **(pipeline_kwargs or {})},
    ).frames[0]

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
    theirs = pipeline_frames(family.pipe, shape, steps, seed, cfg_scale, pipeline_kwargs, prompt=prompt,
                             negative_prompt=negative)
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
    theirs = pipeline_frames(pipe or family.pipe, shape, steps, seed, cfg_scale, pipeline_kwargs, image=image,
                             prompt=prompt, negative_prompt=negative)
    assert alone.shape == theirs.shape, (alone.shape, theirs.shape)
    for name, ours in (("alone", alone), ("batched", batched)):
        diff = float(np.abs(ours - theirs).max())
        assert diff <= TOLERANCE, f"{name}: max abs diff {diff} vs the diffusers image-to-video pipeline"
    # The check must be able to fail: another image gives other frames.
    moved = sample(family, [SampleSpec(prompt, negative_prompt=negative, seed=seed, cfg_scale=cfg_scale,
                                       image=other_image)], shape, steps).frames[0].numpy()
    assert float(np.abs(moved - theirs).max()) > 1e-3


def test_video(seed: int, shape: VideoShape) -> list:
    """A deterministic random clip: ``shape.frames`` RGB frames (PIL) of the shape's size, each a smooth
    shift of the previous so that it looks like motion to a VAE."""
    from PIL import Image

    base = np.random.default_rng(seed).integers(0, 256, (shape.height, shape.width * 2, 3), dtype=np.uint8)
    return [Image.fromarray(np.ascontiguousarray(base[:, i:i + shape.width])) for i in range(shape.frames)]


test_video.__test__ = False  # a helper, not a test


class _Scheduled(Exception):
    """Raised by ``truncated_schedule(stop=True)`` once the pipeline has computed its schedule."""


@contextmanager
def truncated_schedule(pipe: Any, start: int, stop: bool = False) -> Iterator[list[torch.Tensor]]:
    """Inside, the pipeline's scheduler keeps ``timesteps[start:]`` and ``sigmas[start:]`` of whatever
    schedule the pipeline's own ``set_timesteps`` call computes (diffusers' ``get_timesteps``, for a
    pipeline that has none: LTX-Video's and HunyuanVideo's text-to-video ones). Yields the first sigma
    of each schedule set; ``stop``: the pipeline call ends there (with ``_Scheduled``)."""
    scheduler = pipe.scheduler
    original = scheduler.set_timesteps
    first: list[torch.Tensor] = []

    @functools.wraps(original)  # the pipeline inspects its signature
    def set_timesteps(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[start:]
        scheduler.sigmas = scheduler.sigmas[start:]
        first.append(scheduler.sigmas[0])
        if stop:
            raise _Scheduled

    scheduler.set_timesteps = set_timesteps
    try:
        yield first
    except _Scheduled:
        pass
    finally:
        del scheduler.set_timesteps


def assert_v2v_matches(
    family: PipelineFamily,
    shape: VideoShape,
    steps: int,
    cfg_scale: float,
    strength: float,
    reference: Callable[[list, str, str, int], np.ndarray],
    seed: int = 7,
) -> None:
    """Video-to-video: ``sample`` without guidance, alone and batched with a text-to-video request (another
    prompt, seed and CFG scale, running every step while the video's sample runs the last ones), gives
    ``reference(video, prompt, negative_prompt, seed)``'s frames; another video gives other frames."""
    video, other_video = test_video(seed, shape), test_video(seed + 1, shape)
    prompt, negative = PROMPTS[0], "blurry"
    spec = SampleSpec(prompt, negative_prompt=negative, seed=seed, cfg_scale=cfg_scale, video=video,
                      denoise_strength=strength)
    text = SampleSpec(PROMPTS[1], seed=seed + 11, cfg_scale=cfg_scale + 1.5)
    alone = sample(family, [spec], shape, steps).frames[0].numpy()
    batched = sample(family, [text, spec], shape, steps)
    theirs = reference(video, prompt, negative, seed)
    assert alone.shape == theirs.shape, (alone.shape, theirs.shape)
    for name, ours in (("alone", alone), ("batched", batched.frames[1].numpy())):
        diff = float(np.abs(ours - theirs).max())
        assert diff <= TOLERANCE, f"{name}: max abs diff {diff} vs the video-to-video reference"
    # The text-to-video row ran all its steps beside it, and is as alone.
    assert float((batched.frames[0] - sample(family, [text], shape, steps).frames[0]).abs().max()) <= TOLERANCE
    moved = sample(family, [replace(spec, video=other_video)], shape, steps).frames[0].numpy()
    assert float(np.abs(moved - theirs).max()) > 1e-3


def by_hand_v2v(family: PipelineFamily, shape: VideoShape, steps: int, strength: float, cfg_kwargs: dict[str, Any],
                pack: Callable[[torch.Tensor], torch.Tensor] = lambda z: z,
                normalise: Callable[[torch.Tensor], torch.Tensor] = lambda z: z,
                ) -> Callable[[list, str, str, int], np.ndarray]:
    """A video-to-video reference for a family whose diffusers pipelines have no plain one (LTX-Video,
    HunyuanVideo), from diffusers' own parts and the formulas of ``WanVideoToVideoPipeline``: the clip
    through ``VideoProcessor.preprocess_video`` and the VAE (posterior mode, ``normalise``, ``pack``), the
    pipeline's noise draw (its ``prepare_latents``, from the seed's generator), ``sigma noise + (1 -
    sigma) x0`` at the first sigma of the truncated schedule (``sigma`` read from the pipeline's own
    ``set_timesteps``, computed as its ``__call__`` does), then the pipeline's own denoising loop and
    decoder on ``timesteps[start:]`` (``truncated_schedule``) with those latents and the same generator."""
    from guidance.video_to_video import denoise_start

    pipe = family.pipe
    start = denoise_start(steps, strength)

    def reference(video: list, prompt: str, negative: str, seed: int) -> np.ndarray:
        pixels = pipe.video_processor.preprocess_video(video, height=shape.height, width=shape.width)
        clean = pack(normalise(pipe.vae.encode(pixels.to(pipe.vae.dtype)).latent_dist.mode()).float())
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = pipe.prepare_latents(1, pipe.transformer.config.in_channels, shape.height, shape.width, shape.frames,
                                     torch.float32, torch.device("cpu"), generator)
        call = dict(prompt=prompt, num_inference_steps=steps, height=shape.height, width=shape.width,
                    num_frames=shape.frames)
        with truncated_schedule(pipe, start, stop=True) as first:
            pipe(**call, output_type="latent")  # as far as its schedule: the first sigma
        latents = first[0] * noise + (1.0 - first[0]) * clean
        with truncated_schedule(pipe, start):
            return pipe(**call, negative_prompt=negative, latents=latents, generator=generator, output_type="np",
                        **cfg_kwargs).frames[0]

    return reference

"""Online pieces of the methods: copies of the adapter (lagging, EMA), sampling with the policy or a
copy through the library's sampler, and the flow SDE step that makes SPO's children.

A copy of the model is a copy of the LoRA tensors only (the base weights are shared and frozen):
:func:`swapped_lora` puts a copy's tensors into the live adapter for the duration (no gradient) and
restores the trained ones afterwards, so the lagging policy of Diffusion-DRO and the EMA model of
GradSPO cost one adapter's memory each, not a second transformer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from guidance.align.lora import lora_parameters
from guidance.families.base import PipelineFamily, VideoShape


def lora_snapshot(family: PipelineFamily) -> list[torch.Tensor]:
    """A detached copy of the adapter's tensors (in :func:`lora_parameters` order)."""
    return [p.detach().clone() for _, p in lora_parameters(family)]


def ema_update(ema: list[torch.Tensor], family: PipelineFamily, decay: float) -> None:
    """ema <- decay ema + (1 - decay) theta, in place."""
    with torch.no_grad():
        for e, (_, p) in zip(ema, lora_parameters(family)):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


@contextmanager
def swapped_lora(family: PipelineFamily, tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """The live adapter holds ``tensors`` for the duration (under no_grad); then the trained ones."""
    params = [p for _, p in lora_parameters(family)]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, t in zip(params, tensors):
                p.copy_(t)
            yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def sample_latents(family: PipelineFamily, prompts: Sequence[str], shape: VideoShape, steps: int, seeds: Sequence[int],
                   cfg_scale: float | None = None) -> torch.Tensor:
    """Clean latents [B, ...] the live model (adapter as it is now) samples for ``prompts``, through
    ``guidance.sampler.sample`` (unguided, no decode), on the family's device."""
    from guidance.sampler import SampleSpec, sample

    was_training = family.transformer.training
    family.transformer.eval()
    try:
        specs = [SampleSpec(prompt=p, seed=int(s), cfg_scale=cfg_scale) for p, s in zip(prompts, seeds)]
        result = sample(family, specs, shape, steps, decode=False)
    finally:
        family.transformer.train(was_training)
    return result.latents.detach().float()


def decode_frames(family: PipelineFamily, latents: torch.Tensor, shape: VideoShape) -> torch.Tensor:
    """Frames [B, F, H, W, 3] in [0, 1] of clean latents (for a pixel judge)."""
    with torch.no_grad():
        generators = [torch.Generator().manual_seed(0) for _ in range(latents.shape[0])]
        return family.decode(latents.to(family.device, family.dtype), shape, generators).float().cpu()

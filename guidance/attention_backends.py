"""Attention kernels for the denoisers, chosen through diffusers' attention dispatcher
(``ModelMixin.set_attention_backend``) rather than patched in here.

A server names one backend for every model it hosts (``nrg serve --attention-backend``). Only backends
that run from installed packages are offered: diffusers' ``*_hub`` backends download kernels when they
are first set, and a server downloads nothing. A backend is checked before any model loads, so a wrong
choice costs one clear line at start instead of a failed first job:

- on a CPU only PyTorch's own kernels run (``native``, ``_native_math``, ``_native_flash``, ``flex``;
  measured on the tiny Wan: the others raise inside scaled_dot_product_attention);
- a backend whose package is missing (``flash``: flash-attn, ``sage``: sageattention, ``xformers``) is
  refused with diffusers' own message naming the package;
- a family whose attention does not go through the dispatcher (CogVideoX's processors call PyTorch's
  attention themselves) is refused rather than silently left on native.

Only the denoisers are switched. The reward trunk keeps ``native``: guidance differentiates it, and
some backends have no backward (SageAttention; FlexAttention on a CPU). diffusers also makes the last
backend set the process's default for every module that names none, so the trunk is pinned to
``native`` explicitly before the denoisers are switched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads the names below without importing torch
    import torch

    from guidance.families.base import PipelineFamily

#: diffusers' backends that run from installed packages (no ``*_hub`` download, no NPU/XLA device).
ATTENTION_BACKENDS = (
    "native", "_native_math", "_native_flash", "_native_efficient", "_native_cudnn", "flex",
    "flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "sage", "sage_varlen", "xformers",
)
#: The backends a CPU runs: PyTorch's own attention kernels.
CPU_BACKENDS = ("native", "_native_math", "_native_flash", "flex")
DEFAULT_BACKEND = "native"


def check_attention_backend(name: str, device: torch.device) -> None:
    """Raise ValueError, in one line, when ``name`` cannot run on ``device`` with what is installed."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"--attention-backend must be one of {', '.join(ATTENTION_BACKENDS)}; got {name!r}")
    if device.type != "cuda" and name not in CPU_BACKENDS:
        raise ValueError(f"--attention-backend {name} needs a CUDA device; on {device.type} use one of "
                         f"{', '.join(CPU_BACKENDS)}")
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except RuntimeError as exc:
        raise ValueError(f"--attention-backend {name}: {exc}") from None


def set_attention_backend(family: PipelineFamily, name: str, reward: object = None) -> None:
    """Run every denoiser of ``family`` on backend ``name`` (checked by :func:`check_attention_backend`),
    and ``reward``'s trunk (a latent reward model's; other rewards have none) on native. ``native`` is
    diffusers' default and changes nothing."""
    if name == DEFAULT_BACKEND:
        return
    if not family.attention_dispatch:
        raise ValueError(f"--attention-backend {name}: {family.label}'s attention does not go through diffusers' "
                         f"dispatcher; it runs {DEFAULT_BACKEND} only")
    trunk = getattr(reward, "trunk", None)
    if trunk is not None:
        trunk.set_attention_backend(DEFAULT_BACKEND)
    for model in family.denoisers:
        model.set_attention_backend(name)

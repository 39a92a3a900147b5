"""What the guided-step backends share: the stats type and the argument checks.

The dispatcher validates through :func:`prepare_inputs` before it picks a backend, so a bad argument
raises the same ``ValueError`` whichever backend runs, and both backends see the same flattened,
contiguous ``[B, N]`` / ``[B, K, N]`` views (``N`` = elements per sample). Keeping this in its own module
lets the dispatcher, the reference and the kernel import it without importing one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: How the objectives' gradients are scaled before the weighted sum (docs/kernels.md):
#: ``relative`` w_k * RMS(ref) / RMS(g_k); ``sum`` w_k (raw); ``unit`` w_k / ||g_k||.
MODES: tuple[str, ...] = ("relative", "sum", "unit")
#: Storage dtypes of the big tensors; all arithmetic is float32 whichever is used.
STORAGE_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class GuidedStepStats:
    """Per-sample diagnostics of one guided step, on the input device (no host sync to build them).

    ``grad_norms[b, k]`` is the float32 L2 norm of objective ``k``'s gradient for sample ``b``: ``inf`` or
    ``nan`` when that gradient has a non-finite element, and also ``inf`` when a huge but finite gradient
    overflows the float32 sum of squares. ``skipped[b]`` is True when sample ``b`` wanted guidance
    (``coef[b] != 0``) but got none because a gradient with nonzero weight had a non-finite norm.
    """

    grad_norms: torch.Tensor
    skipped: torch.Tensor
    #: Mode ``relative`` only: the per-sample RMS the push is sized against ([B] float32), that of
    #: ``pred_cond - pred_uncond`` (the CFG difference), or of ``pred_cond`` where that is all zero.
    reference_rms: torch.Tensor | None = None


@dataclass(frozen=True)
class GuidedStepInputs:
    """Validated arguments, flattened to ``[B, N]`` (``grads``: ``[B, K, N]``) and contiguous."""

    pred_cond: torch.Tensor
    grads: torch.Tensor
    weights: torch.Tensor
    coef: torch.Tensor
    pred_uncond: torch.Tensor | None
    cfg_scale: torch.Tensor | None
    x: torch.Tensor | None
    dt: torch.Tensor | None
    mode: str
    eps: float
    out_shape: torch.Size
    out_dtype: torch.dtype


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    return value


def _check_shaped(
    name: str, value: object, shape: tuple[int, ...], shape_text: str, device: torch.device, small: bool = False
) -> torch.Tensor:
    """Check a latent-sized tensor (a storage dtype) or, ``small``, a per-sample scalar one (float32: the
    kernel reads it as float32): dtype, exact shape, device."""
    t = _check_tensor(name, value)
    if small and t.dtype != torch.float32:
        raise ValueError(f"{name} must be float32; got {t.dtype}")
    if not small and t.dtype not in STORAGE_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16; got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape_text} = {list(shape)}; got {list(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device} like pred_cond; got {t.device}")
    return t


def prepare_inputs(
    pred_cond: torch.Tensor,
    grads: torch.Tensor | None,
    weights: torch.Tensor | None,
    coef: torch.Tensor | None,
    *,
    pred_uncond: torch.Tensor | None = None,
    cfg_scale: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
    dt: torch.Tensor | None = None,
    mode: str = "sum",
    eps: float = 1e-12,
) -> GuidedStepInputs:
    """Validate every argument (``ValueError`` naming it) and flatten the big ones: the dispatcher calls
    it once, and hands the result to whichever backend runs.

    ``grads=None`` (with ``weights=None``; ``coef`` may be None too) is the unguided step: CFG and Euler
    only, with an empty ``[B, 0, N]`` gradient so no backend reads or reduces one.

    Only shapes, dtypes and devices are inspected, never values, so this never synchronises with the
    device. Non-contiguous inputs are copied to contiguous memory here: the kernel indexes samples as
    flat rows, and a copy is what the reference would pay anyway.
    """
    pred_cond = _check_tensor("pred_cond", pred_cond)
    if pred_cond.dim() < 1:
        raise ValueError("pred_cond must have shape [B, *S]; got a 0-d tensor")
    if pred_cond.dtype not in STORAGE_DTYPES:
        raise ValueError(f"pred_cond must be float32, float16 or bfloat16; got {pred_cond.dtype}")
    device = pred_cond.device
    batch, spatial = pred_cond.shape[0], tuple(pred_cond.shape[1:])
    if grads is None:
        # The unguided rows of a batch: no gradient is read, no norm is computed (K = 0, mode sum).
        if weights is not None:
            raise ValueError("weights must be None when grads is None (no objective to weight)")
        grads = pred_cond.new_empty((batch, 0, *spatial))
        weights = torch.empty((batch, 0), dtype=torch.float32, device=device)
        coef = torch.zeros(batch, dtype=torch.float32, device=device) if coef is None else coef
        mode = "sum"
        unguided = True
    else:
        grads = _check_tensor("grads", grads)
        unguided = False
    well_formed = grads.dim() == pred_cond.dim() + 1 and grads.shape[0] == batch and tuple(grads.shape[2:]) == spatial
    if not well_formed or (grads.shape[1] < 1 and not unguided):
        raise ValueError(
            f"grads must have shape [B, K, *S] = [{', '.join([str(batch), 'K', *map(str, spatial)])}] "
            f"with K >= 1; got {list(grads.shape)}"
        )
    k = grads.shape[1]
    _check_shaped("grads", grads, (batch, k, *spatial), "[B, K, *S]", device)
    _check_shaped("weights", weights, (batch, k), "[B, K]", device, small=True)
    _check_shaped("coef", coef, (batch,), "[B]", device, small=True)
    if (pred_uncond is None) != (cfg_scale is None):
        raise ValueError("pred_uncond and cfg_scale must be given together (CFG on) or both omitted (CFG off)")
    if pred_uncond is not None:
        _check_shaped("pred_uncond", pred_uncond, (batch, *spatial), "[B, *S]", device)
        _check_shaped("cfg_scale", cfg_scale, (batch,), "[B]", device, small=True)
    if (x is None) != (dt is None):
        raise ValueError(
            "x and dt must be given together (output = next latents) or both omitted (output = prediction)"
        )
    if x is not None:
        _check_shaped("x", x, (batch, *spatial), "[B, *S]", device)
        _check_shaped("dt", dt, (batch,), "[B]", device, small=True)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0; got {eps!r}")

    numel = math.prod(spatial)

    def flat(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.contiguous().reshape(batch, numel)

    return GuidedStepInputs(
        pred_cond=flat(pred_cond),
        grads=grads.contiguous().reshape(batch, k, numel),
        weights=weights.contiguous(),
        coef=coef.contiguous(),
        pred_uncond=flat(pred_uncond),
        cfg_scale=None if cfg_scale is None else cfg_scale.contiguous(),
        x=flat(x),
        dt=None if dt is None else dt.contiguous(),
        mode=mode,
        eps=float(eps),
        out_shape=pred_cond.shape,
        out_dtype=pred_cond.dtype if x is None else x.dtype,
    )

"""PyTorch reference of the guided step: the test oracle for the Triton kernel and the CPU path.

It is written as the equations of ``docs/kernels.md``, one tensor op per term, in float32, with the same
order of operations as the kernel (so that on CPU the two agree to rounding of the norms). It loops over
the K objectives (a handful) but never over samples: a heterogeneous batch is one sequence of ops.
"""

from __future__ import annotations

import math

import torch

from kernels._guided_step_common import GuidedStepInputs, GuidedStepStats


def guided_step_reference(a: GuidedStepInputs) -> tuple[torch.Tensor, GuidedStepStats]:
    """Apply CFG, the reward-gradient correction and (optionally) the Euler update to validated inputs
    (``prepare_inputs``); see ``guided_step``."""
    cond = a.pred_cond.float()
    uncond = None if a.pred_uncond is None else a.pred_uncond.float()
    p_cfg = cond if uncond is None else uncond + a.cfg_scale[:, None] * (cond - uncond)

    g = a.grads.float()
    # Plain sum of squares, not torch.linalg.vector_norm: the kernel does not rescale either, so a
    # gradient whose squares overflow float32 reads as non-finite in both.
    norms = g.square().sum(dim=-1).sqrt()
    weighted = a.weights != 0
    skipped = (a.coef != 0) & (weighted & ~torch.isfinite(norms)).any(dim=1)
    active = (a.coef != 0) & ~skipped

    reference = None
    if a.mode == "relative":
        reference = reference_rms(cond, uncond)
        rms = norms / math.sqrt(g.shape[-1])
        scale = a.weights * reference[:, None] / rms.clamp_min(a.eps)
    elif a.mode == "unit":
        scale = a.weights / norms.clamp_min(a.eps)
    else:
        scale = a.weights
    # Zero-weight objectives are selected away, never multiplied by 0: 0 * inf and 0 * nan are nan.
    scale = torch.where(weighted, scale, 0.0)
    guidance = torch.zeros_like(p_cfg)
    for k in range(g.shape[1]):
        guidance = guidance + scale[:, k, None] * torch.where(weighted[:, k, None], g[:, k], 0.0)
    # A select, not a multiplication by 0, so unguided samples get p_cfg bit for bit even when their
    # guidance term is nan.
    p = torch.where(active[:, None], p_cfg - a.coef[:, None] * guidance, p_cfg)

    out = p if a.x is None else a.x.float() + a.dt[:, None] * p
    stats = GuidedStepStats(grad_norms=norms, skipped=skipped, reference_rms=reference)
    return out.to(a.out_dtype).reshape(a.out_shape), stats


def reference_rms(cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
    """Per-sample RMS of the CFG difference ``cond - uncond`` ([B, N] float32 in, [B] out).

    A sample without CFG has no such term (no ``uncond``, or ``uncond`` a copy of ``cond`` in a batch
    where others use CFG): its all-zero difference falls back to the RMS of ``cond`` itself, so mode
    ``relative`` then sizes the push against the velocity rather than silently not pushing.
    """
    diff_sq = torch.zeros(cond.shape[0], device=cond.device) if uncond is None else (cond - uncond).square().sum(-1)
    chosen = torch.where(diff_sq > 0, diff_sq, cond.square().sum(-1))
    return (chosen / cond.shape[-1]).sqrt()

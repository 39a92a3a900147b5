"""Triton implementation of the guided step: a fixed sequence of three launches for any batch.

The step is memory-bound (a few flops per element against 4 + K streamed tensors), so the design
minimises passes over the big tensors and never loops over samples on the host:

* mode ``"sum"``: the norms are needed only to detect a non-finite gradient, so the step is computed
  optimistically in one fused pass that also writes per-chunk partial sums of squares
  (``_guided_step_kernel`` with ``UNIT=False``); ``_finalize_kernel`` reduces them to the norms and the
  skip flags; ``_unguided_fixup_kernel`` rewrites the samples that must be skipped with their unguided
  step. Its loads and stores are masked by the skip flag, so in the normal case (no skip) it moves no
  data. Each gradient is read once.
* modes ``"unit"`` and ``"relative"``: each gradient's scale depends on its norm, so the norms come
  first: ``_sumsq_kernel`` (partial sums of squares), ``_finalize_kernel``, then ``_guided_step_kernel``
  with ``NORMED=True``, which reads only the gradients that carry weight in samples that are guided.
  ``"relative"`` also needs each sample's reference RMS (of the CFG difference, or of the conditional
  prediction where that difference is all zero): ``_reference_sumsq_kernel`` writes its partial sums
  in the same first pass and ``_finalize_kernel`` reduces them beside the norms.

Partial sums go to a ``[B, K, num_chunks]`` float32 buffer and are reduced in a fixed order, not with
atomics, so the norms (and the skip decision) are deterministic run to run. Every decision is taken
on the device from those buffers: there is no ``.item()`` and no host synchronisation.
All arithmetic is float32: loads are cast with ``.to(tl.float32)`` and results are cast to the output
dtype at the store (this also keeps Triton's CPU interpreter, which mishandles bf16 arithmetic, exact).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from kernels._guided_step_common import GuidedStepInputs, GuidedStepStats

#: Whether the kernels below run in Triton's CPU interpreter. Triton reads TRITON_INTERPRET when a
#: ``@triton.jit`` function is defined, so the value at import time is the one that counts.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: Elements per program in the streaming kernels: with 4 warps, 16 elements per thread and tensor, i.e.
#: two 128-bit loads of bf16, so each thread has 2 * (K + 3) loads in flight. Chosen, not tuned: no GPU
#: was available when this was written; retune with benchmarks/kernel_bench.py.
BLOCK_SIZE = 2048
NUM_WARPS = 4
#: No fused multiply-add contraction: the kernels are memory-bound, so FMA buys no time, and without it
#: float32 results round like eager PyTorch's separate multiply and add. (Explicit also because
#: Triton's default for it changes in 3.10.)
ENABLE_FP_FUSION = False
#: Upper bound on the vector width used to reduce the per-chunk partial sums of one (sample, objective).
MAX_FINALIZE_BLOCK = 1024
#: CUDA limits grid axis 1 (samples; sample x objective rows in pass 1 of mode "unit") to 65535.
MAX_GRID_Y = 65535


@triton.jit
def _load_p_cfg(pc_ptr, pu_ptr, cfg_ptr, b, row, offs, mask, HAS_UNCOND: tl.constexpr):
    """The CFG-combined prediction of one chunk, in float32.

    Shared by the step and the fix-up kernels so that a skipped sample gets exactly the same bits
    as a sample with coef 0.
    """
    p = tl.load(pc_ptr + row + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_UNCOND:
        uncond = tl.load(pu_ptr + row + offs, mask=mask, other=0.0).to(tl.float32)
        p = uncond + tl.load(cfg_ptr + b) * (p - uncond)
    return p


@triton.jit
def _store_out(out_ptr, x_ptr, dt_ptr, b, row, offs, mask, p, HAS_X: tl.constexpr):
    """Write ``x + dt * p`` (next latents) or ``p``, cast to the output dtype."""
    if HAS_X:
        latents = tl.load(x_ptr + row + offs, mask=mask, other=0.0).to(tl.float32)
        p = latents + tl.load(dt_ptr + b) * p
    tl.store(out_ptr + row + offs, p.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sumsq_kernel(g_ptr, partial_ptr, N, num_chunks, BLOCK_SIZE: tl.constexpr):
    """Pass 1 of mode "unit": one float32 partial sum of squares per (row = b*K + k, chunk)."""
    chunk = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    offs = chunk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    g = tl.load(g_ptr + row * N + offs, mask=offs < N, other=0.0).to(tl.float32)
    tl.store(partial_ptr + row * num_chunks + chunk, tl.sum(g * g))


@triton.jit
def _reference_sumsq_kernel(pc_ptr, pu_ptr, ref_partial_ptr, N, num_chunks, HAS_UNCOND: tl.constexpr,
                            BLOCK_SIZE: tl.constexpr):
    """Pass 1 of mode "relative": per (sample, chunk), partial sums of squares of the CFG difference
    ``pred_cond - pred_uncond`` (slot 0) and of ``pred_cond`` (slot 1, the fallback reference)."""
    chunk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = chunk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < N
    cond = tl.load(pc_ptr + b * N + offs, mask=mask, other=0.0).to(tl.float32)
    diff = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    if HAS_UNCOND:
        diff = cond - tl.load(pu_ptr + b * N + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(ref_partial_ptr + (b * 2) * num_chunks + chunk, tl.sum(diff * diff))
    tl.store(ref_partial_ptr + (b * 2 + 1) * num_chunks + chunk, tl.sum(cond * cond))


@triton.jit
def _sum_partials(partial_ptr, row, num_chunks, BLOCK_C: tl.constexpr):
    """The partial sums of one row, reduced in a fixed order (deterministic, no atomics)."""
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for start in range(0, num_chunks, BLOCK_C):
        offs = start + tl.arange(0, BLOCK_C)
        acc += tl.load(partial_ptr + row * num_chunks + offs, mask=offs < num_chunks, other=0.0)
    return tl.sum(acc)


@triton.jit
def _finalize_kernel(
    partial_ptr, w_ptr, coef_ptr, norm_ptr, skip_ptr, ref_partial_ptr, ref_ptr, num_chunks, N,
    K: tl.constexpr, BLOCK_C: tl.constexpr, RELATIVE: tl.constexpr,
):
    """Per sample: reduce the partials to the K norms (and, mode "relative", the reference RMS) and
    set the skip flag.

    A non-finite partial (from a nan/inf element, or float32 overflow of the squares) makes the norm
    non-finite; it skips the sample only if that objective has nonzero weight and coef != 0.
    """
    b = tl.program_id(0).to(tl.int64)
    if RELATIVE:
        diff_sq = _sum_partials(ref_partial_ptr, b * 2, num_chunks, BLOCK_C)
        cond_sq = _sum_partials(ref_partial_ptr, b * 2 + 1, num_chunks, BLOCK_C)
        tl.store(ref_ptr + b, tl.sqrt_rn(tl.where(diff_sq > 0, diff_sq, cond_sq) / N))
    bad = 0
    for k in tl.static_range(K):
        row = b * K + k
        norm = tl.sqrt_rn(_sum_partials(partial_ptr, row, num_chunks, BLOCK_C))
        tl.store(norm_ptr + row, norm)
        # `norm < inf` is False for both inf and nan.
        bad = tl.maximum(bad, tl.where(tl.load(w_ptr + row) != 0, tl.where(norm < float("inf"), 0, 1), 0))
    tl.store(skip_ptr + b, tl.where(tl.load(coef_ptr + b) != 0, bad, 0).to(tl.uint8))


@triton.jit
def _guided_step_kernel(
    out_ptr, pc_ptr, pu_ptr, cfg_ptr, x_ptr, dt_ptr, g_ptr, w_ptr, coef_ptr,
    norm_ptr, skip_ptr, partial_ptr, ref_ptr, N, num_chunks, eps, sqrt_n,
    K: tl.constexpr, HAS_UNCOND: tl.constexpr, HAS_X: tl.constexpr, NORMED: tl.constexpr,
    RELATIVE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    """One chunk of one sample: CFG, the weighted gradient sum, the guided update, the Euler step.

    ``NORMED=False`` (mode "sum", before the norms are known): every gradient is read (its partial sum
    of squares is written for ``_finalize_kernel``) and the update uses the raw coef; samples that
    must be skipped are rewritten afterwards by ``_unguided_fixup_kernel``.
    ``NORMED=True`` (modes "unit" and "relative", after pass 1): the skip flag and norms are read, each
    gradient is scaled by weight / max(norm, eps) (``unit``) or weight * ref / max(norm / sqrt(N), eps)
    (``relative``), and gradients that do not contribute are never loaded.
    """
    chunk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    row = b * N
    offs = chunk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < N
    coef = tl.load(coef_ptr + b)
    if NORMED:
        coef = tl.where(tl.load(skip_ptr + b) != 0, 0.0, coef)
    if RELATIVE:
        reference = tl.load(ref_ptr + b)
    guidance = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for k in tl.static_range(K):
        w = tl.load(w_ptr + b * K + k)
        g_row = (b * K + k) * N
        if NORMED:
            norm = tl.load(norm_ptr + b * K + k)
            if RELATIVE:
                ratio = w * reference / tl.maximum(norm / sqrt_n, eps)
            else:
                ratio = w / tl.maximum(norm, eps)
            scale = tl.where(coef != 0, tl.where(w != 0, ratio, 0.0), 0.0)
            # The mask is built as `offs < (N or 0)`: `mask & scalar_bool` is mistyped by the
            # interpreter. A zero scale loads nothing, so unused gradients cost no bandwidth and a
            # nan in them is never read.
            g = tl.load(g_ptr + g_row + offs, mask=offs < tl.where(scale != 0, N, 0), other=0.0).to(tl.float32)
        else:
            scale = w
            g = tl.load(g_ptr + g_row + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(partial_ptr + (b * K + k) * num_chunks + chunk, tl.sum(g * g))
            # Excluded by a select, not by the zero weight: 0 * nan is nan.
            g = tl.where(w != 0, g, 0.0)
        guidance += scale * g
    p_cfg = _load_p_cfg(pc_ptr, pu_ptr, cfg_ptr, b, row, offs, mask, HAS_UNCOND)
    p = tl.where(coef != 0, p_cfg - coef * guidance, p_cfg)
    _store_out(out_ptr, x_ptr, dt_ptr, b, row, offs, mask, p, HAS_X)


@triton.jit
def _unguided_fixup_kernel(
    out_ptr, pc_ptr, pu_ptr, cfg_ptr, x_ptr, dt_ptr, skip_ptr, N,
    HAS_UNCOND: tl.constexpr, HAS_X: tl.constexpr, BLOCK_SIZE: tl.constexpr,
):
    """Mode "sum": overwrite each skipped sample with its unguided step; a no-op elsewhere.

    The mask is empty unless the sample is skipped, so samples that keep their guided step cost
    one scalar load per program and no traffic on the big tensors.
    """
    chunk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    row = b * N
    offs = chunk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < tl.where(tl.load(skip_ptr + b) != 0, N, 0)
    p_cfg = _load_p_cfg(pc_ptr, pu_ptr, cfg_ptr, b, row, offs, mask, HAS_UNCOND)
    _store_out(out_ptr, x_ptr, dt_ptr, b, row, offs, mask, p_cfg, HAS_X)


def guided_step_triton(a: GuidedStepInputs) -> tuple[torch.Tensor, GuidedStepStats]:
    """The guided step with the Triton kernels on validated inputs (``prepare_inputs``); same contract as
    ``kernels.guided_step.guided_step``.

    ``BLOCK_SIZE`` and ``MAX_FINALIZE_BLOCK`` are read at call time, so tests can shrink them to make a
    small sample span several chunks (with a ragged tail) and several reduction iterations.
    """
    device = a.pred_cond.device
    if device.type != "cuda" and not INTERPRETED:
        raise ValueError(
            f"the Triton guided step needs CUDA tensors; got {device}. CPU tensors run only in Triton's "
            "interpreter: set TRITON_INTERPRET=1 before kernels.guided_step_triton is imported"
        )
    batch, num_obj, numel = a.grads.shape
    block_size = BLOCK_SIZE
    # Offsets within a sample are int32, and the last chunk's masked lanes reach numel + block_size - 1.
    if numel + block_size > 2**31:
        raise ValueError(
            f"pred_cond has {numel} elements per sample; the Triton kernel supports at most {2**31 - block_size}"
        )
    normed, relative = a.mode in ("unit", "relative"), a.mode == "relative"
    if (batch * num_obj if normed else batch) > MAX_GRID_Y:
        raise ValueError(
            f"the Triton kernel supports B <= {MAX_GRID_Y} (B * K in modes unit and relative); "
            f"got B={batch}, K={num_obj}"
        )

    num_chunks = max(1, triton.cdiv(numel, block_size))
    out = torch.empty((batch, numel), dtype=a.out_dtype, device=device)
    partials = torch.empty((batch, num_obj, num_chunks), dtype=torch.float32, device=device)
    norms = torch.empty((batch, num_obj), dtype=torch.float32, device=device)
    skip = torch.empty((batch,), dtype=torch.uint8, device=device)
    # Mode "relative" only; elsewhere a one-element stand-in that the constexpr flags keep unread.
    ref_partials = torch.empty((batch, 2, num_chunks) if relative else (1,), dtype=torch.float32, device=device)
    reference = torch.empty((batch,) if relative else (1,), dtype=torch.float32, device=device)
    # Absent optional tensors are replaced by any valid pointer; the constexpr flags keep them unread.
    pred_uncond_arg = a.pred_cond if a.pred_uncond is None else a.pred_uncond
    cfg_arg = a.coef if a.cfg_scale is None else a.cfg_scale
    x_arg = a.pred_cond if a.x is None else a.x
    dt_arg = a.coef if a.dt is None else a.dt
    has_uncond, has_x = a.pred_uncond is not None, a.x is not None
    # K = 0 (grads=None): the empty gradient, weight, norm and partial buffers may have null pointers,
    # which a launch refuses; the loop over objectives is empty, so any valid pointer stands in.
    grads_arg, weights_arg = (a.grads, a.weights) if num_obj else (a.pred_cond, a.coef)
    norms_arg, partials_arg = (norms, partials) if num_obj else (a.coef, a.coef)
    grid = (num_chunks, batch)

    def step() -> None:
        _guided_step_kernel[grid](
            out, a.pred_cond, pred_uncond_arg, cfg_arg, x_arg, dt_arg, grads_arg, weights_arg, a.coef,
            norms_arg, skip, partials_arg, reference, numel, num_chunks, a.eps, math.sqrt(numel),
            K=num_obj, HAS_UNCOND=has_uncond, HAS_X=has_x, NORMED=normed, RELATIVE=relative,
            BLOCK_SIZE=block_size, num_warps=NUM_WARPS, enable_fp_fusion=ENABLE_FP_FUSION,
        )

    def finalize() -> None:
        _finalize_kernel[(batch,)](
            partials, a.weights, a.coef, norms, skip, ref_partials, reference, num_chunks, numel,
            K=num_obj, BLOCK_C=min(MAX_FINALIZE_BLOCK, triton.next_power_of_2(num_chunks)), RELATIVE=relative,
            enable_fp_fusion=ENABLE_FP_FUSION,
        )

    if num_obj == 0:  # the unguided step (grads=None): one pass, nothing to reduce or fix up
        step()
        skip.zero_()
    elif normed:
        _sumsq_kernel[(num_chunks, batch * num_obj)](
            a.grads, partials, numel, num_chunks,
            BLOCK_SIZE=block_size, num_warps=NUM_WARPS, enable_fp_fusion=ENABLE_FP_FUSION,
        )
        if relative:
            _reference_sumsq_kernel[grid](
                a.pred_cond, pred_uncond_arg, ref_partials, numel, num_chunks,
                HAS_UNCOND=has_uncond, BLOCK_SIZE=block_size, num_warps=NUM_WARPS,
                enable_fp_fusion=ENABLE_FP_FUSION,
            )
        finalize()
        step()
    else:
        step()
        finalize()
        _unguided_fixup_kernel[grid](
            out, a.pred_cond, pred_uncond_arg, cfg_arg, x_arg, dt_arg, skip, numel,
            HAS_UNCOND=has_uncond, HAS_X=has_x, BLOCK_SIZE=block_size,
            num_warps=NUM_WARPS, enable_fp_fusion=ENABLE_FP_FUSION,
        )
    stats = GuidedStepStats(grad_norms=norms, skipped=skip.view(torch.bool),
                            reference_rms=reference if relative else None)
    return out.reshape(a.out_shape), stats

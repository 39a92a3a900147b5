"""The batched multi-LoRA product as two Triton kernels (a segmented gather-matmul, as in Punica).

Each program serves one row ``b`` of the batch (a sample) and a block of its tokens, and gathers its
adapter's matrices by index, so samples with different adapters (or none) share one launch:

* ``_shrink_kernel``: ``h[b, t, :] = x[b, t, :] @ A[index[b]]^T`` (rank ``R``, padded to a power of
  two >= 16 for ``tl.dot``), accumulated in float32 over blocks of the input width;
* ``_expand_kernel``: ``delta[b, t, n] = coef[b] * h[b, t, :] @ B[index[b]][n, :]^T``, written in
  ``x``'s dtype, or added in place to the base layer's output (``out``: no temporary as large as the
  layer's output); rows with ``index[b] = -1`` load nothing and get exact zeros.

Offsets are int64 throughout (the program's row and token indices are widened before any product):
a row of HunyuanVideo 720p x 129 frames has ~1.8e9 elements at its widest layer, near int32's 2.1e9.
``x`` may be a strided view (any row and token strides, unit stride in the last dim); it is not copied.

float32 inputs use IEEE products (no TF32), so the kernel matches the reference to rounding.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kernels._lora_batch_common import prepare_lora_inputs

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_T = 16
BLOCK_K = 32
BLOCK_N = 32


@triton.jit
def _shrink_kernel(x_ptr, a_ptr, idx_ptr, h_ptr, T, IN, R, stride_xb, stride_xt, R_PAD: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs_t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_r = tl.arange(0, R_PAD)
    adapter = tl.load(idx_ptr + b)
    valid = adapter >= 0
    safe = tl.maximum(adapter, 0).to(tl.int64)
    # Masks are built as `offs < (limit or 0)`: `mask & scalar_bool` is mistyped by the interpreter.
    t_ok = offs_t < tl.where(valid, T, 0)
    r_ok = offs_r < tl.where(valid, R, 0)
    acc = tl.zeros([BLOCK_T, R_PAD], dtype=tl.float32)
    for k in range(0, IN, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        k_ok = offs_k < IN
        xk = tl.load(x_ptr + b * stride_xb + offs_t[:, None] * stride_xt + offs_k[None, :],
                     mask=t_ok[:, None] & k_ok[None, :], other=0.0)
        ak = tl.load(a_ptr + safe * R * IN + offs_r[None, :] * IN + offs_k[:, None],
                     mask=r_ok[None, :] & k_ok[:, None], other=0.0)
        if IEEE:
            acc += tl.dot(xk.to(tl.float32), ak.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xk, ak.to(xk.dtype))
    tl.store(h_ptr + b * T * R_PAD + offs_t[:, None] * R_PAD + offs_r[None, :], acc, mask=(offs_t < T)[:, None])


@triton.jit
def _expand_kernel(h_ptr, b_ptr, idx_ptr, coef_ptr, out_ptr, T, OUT, R, R_PAD: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, ACCUMULATE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs_t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R_PAD)
    adapter = tl.load(idx_ptr + b)
    valid = adapter >= 0
    safe = tl.maximum(adapter, 0).to(tl.int64)
    t_ok = offs_t < T
    n_ok = offs_n < OUT
    h = tl.load(h_ptr + b * T * R_PAD + offs_t[:, None] * R_PAD + offs_r[None, :],
                mask=(offs_t < tl.where(valid, T, 0))[:, None], other=0.0)
    bt = tl.load(b_ptr + safe * OUT * R + offs_n[None, :] * R + offs_r[:, None],
                 mask=(offs_r < tl.where(valid, R, 0))[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
    if IEEE:
        y = tl.dot(h, bt, input_precision="ieee")
    else:
        y = tl.dot(h, bt)
    y = y * tl.where(valid, tl.load(coef_ptr + b), 0.0)  # rows without an adapter: 0 * 0
    out = out_ptr + b * T * OUT + offs_t[:, None] * OUT + offs_n[None, :]
    mask = t_ok[:, None] & n_ok[None, :]
    if ACCUMULATE:
        y = tl.load(out, mask=mask, other=0.0).to(tl.float32) + y
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


def lora_batch_triton(x: torch.Tensor, a_stack: torch.Tensor, b_stack: torch.Tensor, index: torch.Tensor,
                      coef: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as ``kernels.lora_batch.lora_batch``."""
    args = prepare_lora_inputs(x, a_stack, b_stack, index, coef, out)
    if args.x.device.type != "cuda" and not INTERPRETED:
        raise ValueError(f"the Triton LoRA kernel needs CUDA tensors; got {args.x.device}. CPU tensors run only "
                         "in Triton's interpreter: set TRITON_INTERPRET=1 before kernels.lora_batch_triton is imported")
    batch, tokens, width = args.x.shape
    _, out_width, rank = args.b_stack.shape
    r_pad = max(16, triton.next_power_of_2(rank))
    h = torch.empty((batch, tokens, r_pad), dtype=torch.float32, device=args.x.device)
    accumulate = out is not None
    delta = out.view(batch, tokens, out_width) if accumulate else torch.empty(
        (batch, tokens, out_width), dtype=args.x.dtype, device=args.x.device)
    # float32 inputs, and every input in the interpreter (whose 16-bit dot products are not exact), are
    # multiplied in IEEE float32; 16-bit inputs on a GPU use its bf16/fp16 tensor cores.
    ieee = args.x.dtype == torch.float32 or INTERPRETED
    _shrink_kernel[(batch, triton.cdiv(tokens, BLOCK_T))](
        args.x, args.a_stack, args.index, h, tokens, width, rank, args.x.stride(0), args.x.stride(1),
        R_PAD=r_pad, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, IEEE=ieee,
    )
    _expand_kernel[(batch, triton.cdiv(tokens, BLOCK_T), triton.cdiv(out_width, BLOCK_N))](
        h, args.b_stack, args.index, args.coef, delta, tokens, out_width, rank,
        R_PAD=r_pad, BLOCK_T=BLOCK_T, BLOCK_N=BLOCK_N, IEEE=ieee, ACCUMULATE=accumulate,
    )
    return out if accumulate else delta.reshape(args.out)

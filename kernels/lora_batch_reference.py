"""The batched multi-LoRA product in PyTorch: the reference the Triton kernel is tested against, and
the implementation off CUDA.

Per row ``b`` of a batch (a sample) with adapter ``a = index[b]`` (``-1``: none):
``delta[b] = coef[b] * (x[b] @ A[a]^T) @ B[a]^T``, zero for rows without an adapter. Rows are grouped
by adapter, so each adapter present costs two matmuls over its rows (Punica's SGMV, done with torch).
"""

from __future__ import annotations

import torch

from kernels._lora_batch_common import prepare_lora_inputs


def lora_batch_reference(x: torch.Tensor, a_stack: torch.Tensor, b_stack: torch.Tensor, index: torch.Tensor,
                         coef: torch.Tensor) -> torch.Tensor:
    """``delta`` of shape ``[B, T, out]`` in ``x``'s dtype; see the module docstring."""
    args = prepare_lora_inputs(x, a_stack, b_stack, index, coef)
    x3, out = args.x, args.out
    delta = x3.new_zeros((x3.shape[0], x3.shape[1], args.b_stack.shape[1]))
    present = sorted({a for a in args.index.tolist() if a >= 0})
    for adapter in present:
        rows = (args.index == adapter).nonzero().flatten()
        h = x3[rows].to(args.a_stack.dtype) @ args.a_stack[adapter].t()
        y = (h @ args.b_stack[adapter].t()).float() * args.coef[rows].view(-1, 1, 1)
        delta[rows] = y.to(delta.dtype)
    return delta.reshape(out)

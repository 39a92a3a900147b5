"""The batched multi-LoRA product in PyTorch: the reference the Triton kernel is tested against, the
implementation off CUDA, and the gathered form ``torch.compile`` traces.

Per row ``b`` of a batch (a sample) with adapter ``a = index[b]`` (``-1``: none):
``delta[b] = coef[b] * (x[b] @ A[a]^T) @ B[a]^T``, zero for rows without an adapter. The reference
groups rows by adapter, so each adapter present costs two matmuls over its rows (Punica's SGMV, done
with torch); which adapters are present is read on the host, which a compiled graph cannot do.
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


def lora_batch_gathered(x: torch.Tensor, a_stack: torch.Tensor, b_stack: torch.Tensor, index: torch.Tensor,
                        coef: torch.Tensor) -> torch.Tensor:
    """The same ``delta`` with no host read: every row gathers its own ``A`` and ``B`` (rank-sized, so
    cheap) and two batched matmuls follow. ``torch.compile`` traces it into the denoiser's graph at any
    batch size, where the reference's grouping by adapter would break the graph at every LoRA layer."""
    args = prepare_lora_inputs(x, a_stack, b_stack, index, coef)
    pick = args.index.clamp_min(0)
    h = torch.bmm(args.x.to(args.a_stack.dtype), args.a_stack[pick].transpose(1, 2))
    y = torch.bmm(h, args.b_stack[pick].transpose(1, 2)).float()
    y = y * (args.coef * (args.index >= 0)).view(-1, 1, 1)
    return y.to(args.x.dtype).reshape(args.out)

"""The public batched multi-LoRA product: each sample of a batch with its own adapter and scale.

``lora_batch`` picks the backend like ``kernels.guided_step`` (``NRG_KERNEL``: ``auto`` | ``triton`` |
``torch``): the Triton segmented gather-matmul on CUDA, the PyTorch reference elsewhere. Inside a graph
``torch.compile`` is tracing (``nrg serve --compile``) it is the gathered form on every device: the
other two read on the host which adapters are present, which would break the graph.
"""

from __future__ import annotations

import torch

from kernels.guided_step import guided_step_backend
from kernels.lora_batch_reference import lora_batch_gathered, lora_batch_reference

__all__ = ["lora_batch"]


def lora_batch(x: torch.Tensor, a_stack: torch.Tensor, b_stack: torch.Tensor, index: torch.Tensor,
               coef: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``delta[b] = coef[b] * (x[b] @ a_stack[index[b]]^T) @ b_stack[index[b]]^T``; zero where
    ``index[b] == -1``.

    Shapes: ``x`` ``[B, ..., in]``; ``a_stack`` ``[n, R, in]`` and ``b_stack`` ``[n, out, R]`` (the n
    adapters' LoRA matrices, rank padded with zeros to a common R); ``index`` ``[B]`` integer;
    ``coef`` ``[B]`` float32 (the request's scale times the adapter's alpha / r). Returns
    ``[B, ..., out]`` in ``x``'s dtype, to be added to the base layer's output; or, with ``out`` (that
    output, contiguous), adds the delta to ``out`` in place and returns it: the Triton kernel then
    writes no temporary as large as the layer's output.
    """
    if torch.compiler.is_compiling():
        delta = lora_batch_gathered(x, a_stack, b_stack, index, coef)
        return delta if out is None else out.add_(delta.to(out.dtype))
    if isinstance(x, torch.Tensor) and guided_step_backend(x) == "triton":
        from kernels import lora_batch_triton

        return lora_batch_triton.lora_batch_triton(x, a_stack, b_stack, index, coef, out)
    delta = lora_batch_reference(x, a_stack, b_stack, index, coef)
    return delta if out is None else out.add_(delta.to(out.dtype))

"""What the batched-LoRA backends share: argument checks and the flattened views both compute on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoraInputs:
    x: torch.Tensor  # [B, T, in], unit stride in the last dim
    a_stack: torch.Tensor  # [n, R, in]
    b_stack: torch.Tensor  # [n, out, R]
    index: torch.Tensor  # [B] int64, -1 for rows without an adapter
    coef: torch.Tensor  # [B] float32
    out: torch.Size  # the delta's shape: x's with the last dim replaced by out


def prepare_lora_inputs(x: torch.Tensor, a_stack: torch.Tensor, b_stack: torch.Tensor, index: torch.Tensor,
                        coef: torch.Tensor, out: torch.Tensor | None = None) -> LoraInputs:
    """Validate (``ValueError`` naming the argument) and flatten ``x`` to ``[B, T, in]`` (a view when
    its layout allows, so a strided ``x`` is not copied). ``out``, when given, must be the contiguous
    ``[B, ..., out]`` tensor the delta is added to."""
    for name, value in (("x", x), ("a_stack", a_stack), ("b_stack", b_stack), ("index", index), ("coef", coef)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [B, ..., in]; got {list(x.shape)}")
    if a_stack.dim() != 3 or b_stack.dim() != 3:
        raise ValueError(f"a_stack must be [n, R, in] and b_stack [n, out, R]; got {list(a_stack.shape)} "
                         f"and {list(b_stack.shape)}")
    n, rank, width = a_stack.shape
    if width != x.shape[-1]:
        raise ValueError(f"a_stack's last dim must be x's ({x.shape[-1]}); got {width}")
    if b_stack.shape[0] != n or b_stack.shape[2] != rank:
        raise ValueError(f"b_stack must be [n, out, R] = [{n}, out, {rank}]; got {list(b_stack.shape)}")
    batch = x.shape[0]
    if index.shape != (batch,) or index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index must be an integer tensor of shape [B] = [{batch}]; got {index.dtype} "
                         f"{list(index.shape)}")
    if coef.shape != (batch,) or coef.dtype != torch.float32:
        raise ValueError(f"coef must be float32 of shape [B] = [{batch}]; got {coef.dtype} {list(coef.shape)}")
    for name, value in (("a_stack", a_stack), ("b_stack", b_stack), ("index", index), ("coef", coef)):
        if value.device != x.device:
            raise ValueError(f"{name} must be on {x.device} like x; got {value.device}")
    shape = torch.Size([*x.shape[:-1], b_stack.shape[1]])
    if out is not None and (out.shape != shape or not out.is_contiguous() or out.device != x.device):
        raise ValueError(f"out must be a contiguous tensor of shape {list(shape)} on {x.device}; got "
                         f"{list(out.shape)} on {out.device}")
    flat = x.reshape(batch, -1, width)
    return LoraInputs(
        x=flat if flat.stride(-1) == 1 else flat.contiguous(), a_stack=a_stack.contiguous(), b_stack=b_stack.contiguous(),
        index=index.long().contiguous(), coef=coef.contiguous(),
        out=shape,
    )

"""Which device and dtype a model runs in when the operator does not say, and CUDA's matmul settings.

``auto`` is bfloat16 on CUDA and float32 elsewhere. float32 on a GPU runs the transformer's matmuls
at a fraction of the tensor cores' rate, without flash attention, with twice the weights (Wan2.1-14B
with its UMT5-XXL encoder is ~80 GB in float32); bfloat16 has float32's range, so reward gradients do
not underflow. float16 has not that range: gradient guidance in float16 is refused
(``check_guidance_dtype``), because tiny reward gradients would flush to zero and leave the samples
silently unguided.
"""

from __future__ import annotations

import torch

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str | None) -> torch.device:
    """``name``, or CUDA when there is one, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """The weights dtype ``name`` stands for on ``device`` (``auto``: bfloat16 on CUDA, else float32)."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {name!r}")
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def configure_matmul(device: torch.device | str) -> None:
    """On CUDA, let float32 matmuls and convolutions use TF32 tensor cores ("high" precision): what
    stays in float32 in a bf16 model (the reward head, norms, the time embedding) then runs at tensor-
    core speed, with a 10-bit mantissa that is ample for scores and their gradients."""
    if torch.device(device).type != "cuda":
        return
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def check_guidance_dtype(dtype: torch.dtype) -> None:
    """``ValueError`` for reward-gradient guidance in float16 (see the module docstring)."""
    if dtype == torch.float16:
        raise ValueError("reward-gradient guidance needs bfloat16 or float32 weights: in float16 its gradients can "
                         "underflow to zero and leave the sample unguided without a sign; serve this model with "
                         "--dtype bfloat16 (or auto), or use a search mode (best_of_n, fk), which takes no gradient")


def pin_thread_device(device: torch.device | str) -> None:
    """Make ``device`` the calling thread's current CUDA device (nothing for other devices).

    Triton launches its kernels, and CUDA events record, on the thread's current device, which is
    GPU 0 in any thread that never set it: a worker thread serving ``cuda:1`` would launch the fused
    step on GPU 0 with GPU 1's pointers. Call it first thing in the thread that owns the device.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

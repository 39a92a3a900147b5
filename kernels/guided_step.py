"""The public guided step: CFG, Flow-NRG reward-gradient correction and Euler update in one call.

``guided_step`` picks a backend per call: the fused Triton kernels for CUDA tensors, the PyTorch
reference otherwise. ``NRG_KERNEL`` overrides the choice (``auto`` | ``triton`` | ``torch``), e.g. to
compare the two on a GPU, or to run the kernels on CPU tensors in Triton's interpreter
(``TRITON_INTERPRET=1``), which is how the tests execute them without a GPU. Triton is imported only
when its backend is chosen, so the package works where Triton is not installed. The equations are in
``docs/kernels.md``.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from kernels._guided_step_common import GuidedStepStats, prepare_inputs
from kernels.guided_step_reference import guided_step_reference

__all__ = ["BACKEND_ENV_VAR", "BACKEND_CHOICES", "GuidedStepStats", "guided_step", "guided_step_backend"]

BACKEND_ENV_VAR = "NRG_KERNEL"
BACKEND_CHOICES: tuple[str, ...] = ("auto", "triton", "torch")


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def guided_step_backend(tensor: torch.Tensor) -> str:
    """Return ``"triton"`` or ``"torch"``: the backend ``guided_step`` uses for tensors like ``tensor``.

    ``auto`` (the default, also when ``NRG_KERNEL`` is unset or empty) means Triton for CUDA tensors
    when Triton is installed, the reference otherwise; ``triton`` and ``torch`` force a backend.
    The variable is read on every call so that it can be changed at run time (and by tests).
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"guided_step_backend needs a torch.Tensor; got {type(tensor).__name__}")
    raw = os.environ.get(BACKEND_ENV_VAR, "")
    choice = raw.strip().lower() or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_ENV_VAR} must be one of {', '.join(BACKEND_CHOICES)}; got {raw!r}")
    if choice == "auto":
        return "triton" if tensor.is_cuda and _triton_installed() else "torch"
    return choice


def guided_step(
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
) -> tuple[torch.Tensor, GuidedStepStats]:
    """One guided denoising step for a whole batch, each sample with its own settings.

    Per sample b, in float32 whatever the storage dtype:
    ``p_cfg = pred_uncond + cfg_scale[b] * (pred_cond - pred_uncond)`` (or ``pred_cond`` without CFG);
    ``G = sum_k weights[b, k] * grads[b, k]`` (mode ``"sum"``) or with each gradient divided by
    ``max(||grads[b, k]||, eps)`` (mode ``"unit"``), zero-weight objectives left out;
    ``p = p_cfg - coef[b] * G`` if ``coef[b] != 0`` and no weighted gradient is non-finite, else exactly
    ``p_cfg``; the output is ``x + dt[b] * p`` in ``x.dtype`` when ``x`` is given, else ``p`` in
    ``pred_cond.dtype``.

    Shapes: ``pred_cond``, ``pred_uncond``, ``x``: ``[B, *S]``; ``grads``: ``[B, K, *S]``; ``weights``:
    ``[B, K]`` float32; ``coef``, ``cfg_scale``, ``dt``: ``[B]`` float32. ``grads=None`` and
    ``weights=None`` (``coef`` then optional) is the unguided step of rows with no gradient at this step:
    no gradient is allocated, read or reduced. ``pred_uncond``/``cfg_scale``
    and ``x``/``dt`` are given in pairs. All tensors must be on one device; non-contiguous ones are
    copied. Returns the output and ``GuidedStepStats`` (per-objective gradient norms, skip flags), both
    on the input device, without a host synchronisation on the Triton path.
    """
    inputs = prepare_inputs(
        pred_cond, grads, weights, coef,
        pred_uncond=pred_uncond, cfg_scale=cfg_scale, x=x, dt=dt, mode=mode, eps=eps,
    )
    if guided_step_backend(inputs.pred_cond) == "triton":
        from kernels import guided_step_triton

        return guided_step_triton.guided_step_triton(inputs)
    return guided_step_reference(inputs)

"""What the denoiser is trained to predict at a noise level t, in each family's own parameterisation.

t is in [0, 1] with 1 = pure noise, as in :meth:`PipelineFamily.add_noise`, which makes x_t:

* flow matching (Wan, LTX, HunyuanVideo): x_t = (1 - t) x_0 + t n, target v = n - x_0 (the velocity
  the pipelines' Euler step integrates: x_{t - dt} = x_t - dt v); the model's timestep is
  t * num_train_timesteps (the schedulers' ``timesteps = sigmas * num_train_timesteps``).
* diffusion (CogVideoX): the discrete timestep k = round(t (T - 1)) with abar = alphas_cumprod[k],
  x_t = sqrt(abar) x_0 + sqrt(1 - abar) n; target n for eps-prediction and
  v = sqrt(abar) n - sqrt(1 - abar) x_0 for v-prediction (the scheduler's ``get_velocity``).
"""

from __future__ import annotations

import torch

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.align.losses import sample_errors


def model_timestep(family: PipelineFamily, t: torch.Tensor) -> torch.Tensor:
    """The timestep tensor the family's ``predict`` takes for noise levels ``t`` [B]."""
    steps = int(family.pipe.scheduler.config.num_train_timesteps)
    if family.prediction == "flow":
        return t.float() * steps
    return torch.round(t.float() * (steps - 1)).long()


def _abar(family: PipelineFamily, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    alphas = family.pipe.scheduler.alphas_cumprod.to(like.device, torch.float32)
    return alphas[model_timestep(family, t).to(like.device)].view((-1,) + (1,) * (like.ndim - 1))


def training_target(family: PipelineFamily, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The regression target of clean latents ``x0`` noised with ``noise`` at ``t`` (float32)."""
    x0, noise = x0.float(), noise.float()
    if family.prediction == "flow":
        return noise - x0
    if family.prediction == "eps":
        return noise
    abar = _abar(family, t, x0)
    return abar.sqrt() * noise - (1.0 - abar).sqrt() * x0


def prediction_errors(
    family: PipelineFamily,
    model: torch.nn.Module,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    cond: TextConditioning,
    shape: VideoShape,
) -> torch.Tensor:
    """Per-sample e(x) = mean |target - model(x_t, t, c)|^2 [B] for clean latents ``x0`` (one shape)."""
    x_t = family.add_noise(x0, noise, t)
    pred = family.predict(model, x_t, model_timestep(family, t).to(x0.device), cond, shape)
    return sample_errors(pred, training_target(family, x0, noise, t))

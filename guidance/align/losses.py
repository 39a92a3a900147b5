"""The alignment losses, on per-sample prediction errors (no model in here, so they are testable by hand).

Notation: e_th(x) = mean |target - pred_th(x_t, t, c)|^2 over one sample's latent
elements, e_ref the same with the adapter disabled, D(x) = e_th(x) - e_ref(x).

Flow-DPO, winner w and loser l noised with one shared noise tensor at one shared t::

    z = -(beta_t / 2) [D(w) - D(l)]        L = -log sigmoid(z)

z is the implicit reward margin: positive when the policy moved towards the winner more than towards
the loser, relative to the reference. At theta = ref, z = 0 and L = log 2. Errors are mean-reduced
per sample (the paper's beta = 500 is for sum-reduced errors; mean reduction makes beta independent
of the latent size, so a beta chosen on one resolution carries over to another).

beta_t: ``constant`` (beta, the paper's better choice) or ``paper-t`` (beta (1 - t)^2, the schedule
derived in the paper, which puts little weight on high noise where it reward-hacks).

Flow-RWR: L = mean_i w_i e_th(x_i) with w_i = exp(r_i / tau) / mean_j exp(r_j / tau) over the
training set: an unbiased minibatch estimate of E[exp(r / tau) e_th] up to a constant factor, which
fixes the loss scale (a learning rate carries over between tau values) without moving the optimum.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from guidance.align.beta_schedule import BETA_SCHEDULES, BetaSchedule


def sample_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error [B] between a prediction and its target (float32)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def beta_at(beta: float, t: torch.Tensor, schedule: BetaSchedule) -> torch.Tensor:
    """beta_t per sample: ``beta`` (constant) or ``beta (1 - t)^2`` (paper-t); t in [0, 1], 1 = noise."""
    if schedule == "constant":
        return torch.full_like(t, float(beta), dtype=torch.float32)
    if schedule == "paper-t":
        return float(beta) * (1.0 - t.float()).pow(2)
    raise ValueError(f"beta schedule must be one of {', '.join(BETA_SCHEDULES)}; got {schedule!r}")


def dpo_margin(
    err_w: torch.Tensor, ref_w: torch.Tensor, err_l: torch.Tensor, ref_l: torch.Tensor, beta_t: torch.Tensor
) -> torch.Tensor:
    """The implicit reward margin z = -(beta_t / 2) [(e_th(w) - e_ref(w)) - (e_th(l) - e_ref(l))], [B]."""
    return -0.5 * beta_t * ((err_w - ref_w) - (err_l - ref_l))


def flow_dpo_loss(
    err_w: torch.Tensor,
    ref_w: torch.Tensor,
    err_l: torch.Tensor,
    ref_l: torch.Tensor,
    beta_t: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of -log sigmoid(z) over the pairs, and z itself (detached), both from [B] errors.

    ``weights`` (default 1) scale each pair's term, e.g. by how many weighted objectives agree on it.
    """
    z = dpo_margin(err_w, ref_w, err_l, ref_l, beta_t)
    per_pair = -nn.functional.logsigmoid(z)
    if weights is None:
        return per_pair.mean(), z.detach()
    weights = weights.to(per_pair)
    if bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(f"pair weights must be >= 0 with a positive sum; got {weights.tolist()}")
    return (weights * per_pair).sum() / weights.sum(), z.detach()


def rwr_weights(rewards: torch.Tensor, tau: float) -> torch.Tensor:
    """exp(r / tau) normalised to mean 1 over ``rewards`` (computed stably: exp((r - max r) / tau))."""
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a positive number; got {tau}")
    r = rewards.double()
    w = torch.exp((r - r.max()) / tau)
    return (w / w.mean()).float()


def flow_rwr_loss(err: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_i w_i e_th(x_i) over a minibatch, ``weights`` from :func:`rwr_weights`."""
    weights = weights.to(err)
    if weights.shape != err.shape or bool((weights < 0).any()):
        raise ValueError(f"RWR weights must be >= 0, one per sample; got {weights.tolist()} for {err.shape[0]} samples")
    return (weights * err).mean()

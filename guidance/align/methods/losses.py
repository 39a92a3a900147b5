"""The losses of the methods beyond Flow-DPO and Flow-RWR, on per-sample prediction errors.

e_th(x) = mean |target - pred_th(x_t)|^2, e_ref the same with the adapter disabled, D = e_th - e_ref,
z = -(beta / 2) [D(w) - D(l)] the Flow-DPO margin (``guidance.align.losses.dpo_margin``).

Every function here is pure tensor math; the tests check each one against hand computations.
"""

from __future__ import annotations

import math

import torch
from torch import nn


# -- the DPO family, composed: IS-DAA weight, TVKD shaping, Diff-UAPA MAP term --------------------

def is_weight(d_w: torch.Tensor, d_l: torch.Tensor, kappa: torch.Tensor | float, eps: float) -> torch.Tensor:
    """IS-DAA's importance weight sg(exp(min(l(w) + l(l), 2 eps))), l(x) = -(kappa / 2) D(x), [B].

    l(x) is the flow-matching stand-in for log pi_th(x) / pi_ref(x) (the ELBO difference, scaled by
    kappa). The weight is detached (no gradient through it), at most exp(2 eps), 1 at theta = ref;
    as eps -> 0 it is min(1, exp(l(w) + l(l))): pairs the policy already favours over the reference
    keep weight 1 and the rest are down-weighted.
    """
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"--is-clip must be a finite number >= 0; got {eps}")
    log_ratio = -0.5 * torch.as_tensor(kappa, dtype=torch.float32, device=d_w.device) * (d_w + d_l)
    return torch.exp(torch.clamp(log_ratio.detach(), max=2.0 * eps))


def tvkd_shaping(phi_w: torch.Tensor, phi_l: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """TVKD's potential-based shaping alpha (1 - gamma) [Phi(x_t^w) - Phi(x_t^l)], [B]; it is
    subtracted from the DPO margin: z_tvkd = z - shaping. alpha = 0 gives exactly 0 * (...)."""
    return alpha * (1.0 - gamma) * (phi_w.float() - phi_l.float())


def beta_log_pdf(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log BetaPDF(p; a, b) elementwise (a, b > 0; p in (0, 1))."""
    a, b = a.to(p), b.to(p)
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return (a - 1.0) * torch.log(p) + (b - 1.0) * torch.log1p(-p) - log_norm


def uapa_map_term(z: torch.Tensor, a_w: torch.Tensor, b_w: torch.Tensor, a_l: torch.Tensor,
                  b_l: torch.Tensor) -> torch.Tensor:
    """Diff-UAPA's MAP term per pair [B]: -log BetaPDF(s(S_i - mean S); a_i, b_i) summed over the two
    clips, with S(x) = -(beta / 2) D(x), so S_w - mean S = z / 2 and S_l - mean S = -z / 2.

    a_i, b_i: the Beta prior of clip i from its win / loss counts over the annotator groups. The
    gradient is 0 when s(S_i - mean S) sits at the Beta mode (a - 1) / (a + b - 2).
    """
    eps = 1e-6
    p_w = torch.sigmoid(0.5 * z).clamp(eps, 1 - eps)
    p_l = torch.sigmoid(-0.5 * z).clamp(eps, 1 - eps)
    return -beta_log_pdf(p_w, a_w, b_w) - beta_log_pdf(p_l, a_l, b_l)


def composed_dpo_loss(
    z: torch.Tensor,
    weights: torch.Tensor,
    importance: torch.Tensor | None = None,
    map_term: torch.Tensor | None = None,
    map_ratio: float = 0.0,
) -> torch.Tensor:
    """sum_i w_i c_i [-log s(z_i) + map_ratio m_i] / sum_i w_i, c_i the IS weight (default 1).

    With neither option it is the same arithmetic as ``guidance.align.losses.flow_dpo_loss``, so a
    run with the options off (or TVKD alpha = 0) reproduces Flow-DPO bit for bit.
    """
    per_pair = -nn.functional.logsigmoid(z)
    if map_term is not None:
        per_pair = per_pair + map_ratio * map_term
    if importance is not None:
        per_pair = importance.to(per_pair) * per_pair
    weights = weights.to(per_pair)
    return (weights * per_pair).sum() / weights.sum()


# -- Diffusion-DRO -------------------------------------------------------------------------------

def dro_loss(d_expert: torch.Tensor, d_policy: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mean max(0, D(expert) - D(policy) + m) and the per-item diff (detached).

    D = e_th - e_ref on an expert clip and on an online negative sharing its noise and t. Zero (and
    zero gradient) wherever diff < -m: the policy already fits the expert better than the negative
    by the margin, relative to the reference.
    """
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"--dro-margin must be a finite number >= 0; got {margin}")
    diff = d_expert - d_policy
    return torch.clamp(diff + margin, min=0.0).mean(), diff.detach()


# -- SUDO ------------------------------------------------------------------------------------------

def sudo_loss(z: torch.Tensor, err_w: torch.Tensor, sft_weight: float) -> torch.Tensor:
    """(1 - c) mean -log s(z) + c mean e_th(winner); the authors' c = 0.5."""
    return (1.0 - sft_weight) * (-nn.functional.logsigmoid(z)).mean() + sft_weight * err_w.mean()


# -- ABC (interpretation, docs/align.md) -----------------------------------------------------------

def abc_loss(d_w: torch.Tensor, d_l: torch.Tensor, beta: torch.Tensor, weights: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment by classification: the pair (w, l) becomes two labelled samples, (w, 1) and (l, 0),
    and each clip's implicit reward r(x) = -(beta / 2) D(x) is the logit of "x comes from the ideal
    distribution": L = -log s(r(w)) - log s(-r(l)) per pair. Returns the (weighted) mean and r(w), r(l)
    stacked [2, B] (detached). At theta = ref, r = 0 and L = 2 log 2.
    """
    r_w, r_l = -0.5 * beta * d_w, -0.5 * beta * d_l
    per_pair = -nn.functional.logsigmoid(r_w) - nn.functional.logsigmoid(-r_l)
    if weights is None:
        loss = per_pair.mean()
    else:
        weights = weights.to(per_pair)
        loss = (weights * per_pair).sum() / weights.sum()
    return loss, torch.stack([r_w, r_l]).detach()


# -- SPO / GradSPO ---------------------------------------------------------------------------------

def sde_std(t: torch.Tensor, noise_level: float) -> torch.Tensor:
    """Flow-GRPO's SDE diffusion coefficient a sqrt(t / (1 - t)) (t < 1; clamped at 1 - 1e-3)."""
    t = t.float().clamp(1e-4, 1.0 - 1e-3)
    return noise_level * (t / (1.0 - t)).sqrt()


def sde_mean(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor, dt: torch.Tensor, noise_level: float) -> torch.Tensor:
    """The mean of the flow SDE step from t to t + dt (dt < 0) whose marginals match the ODE's
    (Flow-GRPO): x (1 + s^2 dt / (2t)) + v (1 + s^2 (1 - t) / (2t)) dt, s = :func:`sde_std`."""
    view = (-1,) + (1,) * (x_t.ndim - 1)
    s2 = sde_std(t, noise_level).pow(2).view(view)
    tt, dtt = t.float().clamp(1e-4, 1.0).view(view), dt.float().view(view)
    return x_t.float() * (1.0 + s2 * dtt / (2.0 * tt)) + v.float() * (1.0 + s2 * (1.0 - tt) / (2.0 * tt)) * dtt


def step_log_ratio(child: torch.Tensor, mean_th: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log p_th(child | x_t) - log p_ref(child | x_t) of Gaussian steps, mean over elements, [B]."""
    view = (-1,) + (1,) * (child.ndim - 1)
    var = std.float().pow(2).view(view)
    diff = (child.float() - mean_ref.float()).pow(2) - (child.float() - mean_th.float()).pow(2)
    return (diff / (2.0 * var)).flatten(1).mean(dim=1)


def spo_loss(log_ratio_w: torch.Tensor, log_ratio_l: torch.Tensor, beta: float, clip: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """SPO: rho = clamp(exp(log ratio), 1 - eps, 1 + eps), L = -log s(beta log rho_w - beta log rho_l),
    averaged over the pairs in ``mask`` (a zero loss with a graph when no pair qualifies)."""
    rho_w = torch.clamp(torch.exp(log_ratio_w), 1.0 - clip, 1.0 + clip)
    rho_l = torch.clamp(torch.exp(log_ratio_l), 1.0 - clip, 1.0 + clip)
    per = -nn.functional.logsigmoid(beta * (torch.log(rho_w) - torch.log(rho_l)))
    if mask is None:
        return per.mean()
    mask = mask.to(per)
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def gradspo_targets(v_ema: torch.Tensor, direction: torch.Tensor, scale: torch.Tensor, g: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """GradSPO's targets v*_w = v_EMA - g s d, v*_l = v_EMA + g s d (detached), d = (xi_best - xi_worst) / 2.

    Moving the step's mean towards the best child means lowering v along d (x_{t+dt} = x_t + v dt,
    dt < 0). ``scale`` [B] is the SDE step's noise scale s_t sqrt(-dt) / (-dt) in velocity units.
    """
    view = (-1,) + (1,) * (v_ema.ndim - 1)
    shift = g * scale.float().view(view) * direction.float()
    return (v_ema.float() - shift).detach(), (v_ema.float() + shift).detach()


# -- the hybrid schedule ---------------------------------------------------------------------------

def hybrid_phase(step: int, offline: int, online: int) -> str:
    """``"offline"`` or ``"online"`` for a step of the cycle of N offline then M online steps."""
    if offline < 1 or online < 0:
        raise ValueError(f"--hybrid-offline must be >= 1 and --hybrid-online >= 0; got {offline}, {online}")
    return "offline" if step % (offline + online) < offline else "online"

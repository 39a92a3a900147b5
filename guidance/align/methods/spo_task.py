"""The tasks of SPO and GradSPO (declared in :mod:`.spo`): one step's children and their pair are
made alike (:meth:`StepwiseTask.step_pair`); the losses on the pair differ.

GradSPO's EMA copy of the adapter is kept in memory: a run resumed from ``align_state`` re-creates it
from the resumed adapter, so resuming is not bit-exact (as for every online method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from guidance.align import losses
from guidance.align.config import AlignConfig
from guidance.align.lora import adapter_disabled
from guidance.align.methods import losses as mlosses
from guidance.align.methods import online
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.common import (
    ClipItem,
    ClipTask,
    WeightedReward,
    clips_held_out,
    step_generator,
    training_clips,
)
from guidance.align.methods.shared import OnlineOptions, RewardModelOptions
from guidance.align.methods.spo import GradSpoOptions, SpoOptions, StepPairOptions
from guidance.align.noising import model_timestep
from guidance.align.task import derived_seed
from guidance.families.base import PipelineFamily, VideoShape
from guidance.train.reward import PromptCache


@dataclass
class StepPair:
    """One step of the policy from x_t, its k children and the pair of each row (best, worst child)."""

    x_t: torch.Tensor
    t: torch.Tensor
    dt: torch.Tensor
    std: torch.Tensor  # the step's noise std
    mean_th: torch.Tensor  # the policy's step mean
    v_th: torch.Tensor
    v_ref: torch.Tensor
    v_ema: torch.Tensor | None  # GradSPO's EMA copy's velocity
    children: torch.Tensor  # [k, B, ...]
    xi: torch.Tensor  # the children's injected noises [k, B, ...]
    best: torch.Tensor
    worst: torch.Tensor
    mask: torch.Tensor  # rows whose pair is decided by more than --spo-threshold


class StepwiseTask(ClipTask):
    """Step-wise preferences: x_t from the policy's own sample of the item's prompt, noised to a
    random t; k children of one SDE step from x_t (policy mean, independent injected noises); the
    step-aware reward model scores them at t + dt; the best and the worst form the step's pair when
    their softmax-probability gap exceeds ``--spo-threshold``."""

    def __init__(self, family: PipelineFamily, items: list[ClipItem], config: AlignConfig, prompts: PromptCache,
                 what: str, pairing: StepPairOptions, sampling: OnlineOptions, reward: WeightedReward) -> None:
        super().__init__(family, items, config, prompts, what)
        self.pairing, self.sampling, self.reward = pairing, sampling, reward

    def velocity_before_policy(self, x_t: torch.Tensor, timestep: torch.Tensor, cond,
                               shape: VideoShape) -> torch.Tensor | None:
        """A velocity the loss needs from a copy of the adapter, taken before the policy's pass
        (swapping tensors in afterwards would break its graph); none by default."""
        return None

    def step_pair(self, step: int, rows: list[int]) -> StepPair:
        config, family, sampling, pairing = self.config, self.family, self.sampling, self.pairing
        _, prompts, shape = self.batch(rows)
        seeds = [derived_seed(config.seed, step, r, 0x5B0) % (2**31) for r in rows]
        x0 = online.sample_latents(family, prompts, shape, sampling.online_steps, seeds, sampling.online_cfg)
        b = len(rows)
        gen = step_generator(config, step, 0x5B1)
        lo = max(config.t_min, 1.0 / sampling.online_steps)
        t = lo + (config.t_max - lo) * torch.rand(b, generator=gen)
        t = t.clamp(max=1.0 - 1e-3)
        dt = torch.full((b,), -1.0 / sampling.online_steps)
        noise = torch.randn(x0.shape, generator=gen)
        device = x0.device
        t, dt, noise = t.to(device), dt.to(device), noise.to(device)
        x_t = family.add_noise(x0, noise, t)
        cond = self.prompts(prompts)
        timestep = model_timestep(family, t).to(device)
        v_ema = self.velocity_before_policy(x_t, timestep, cond, shape)
        v_th = family.predict(family.transformer, x_t, timestep, cond, shape).float()
        with adapter_disabled(family):
            v_ref = family.predict(family.transformer, x_t, timestep, cond, shape).float()
        std = mlosses.sde_std(t, pairing.spo_noise) * (-dt).sqrt()
        mean_th = mlosses.sde_mean(x_t, v_th, t, dt, pairing.spo_noise)
        view = (-1,) + (1,) * (x_t.ndim - 1)
        k = pairing.spo_children
        xi = torch.randn((k, *x_t.shape), generator=gen).to(device)
        children = mean_th.detach().unsqueeze(0) + std.view(view).unsqueeze(0) * xi
        scores = torch.stack([self.reward(children[j], t + dt, cond, shape) for j in range(k)], dim=1)  # [B, k]
        best, worst = scores.argmax(dim=1), scores.argmin(dim=1)
        probs = torch.softmax(scores, dim=1)
        idx = torch.arange(b, device=device)
        mask = (probs[idx, best] - probs[idx, worst]) > pairing.spo_threshold
        return StepPair(x_t, t, dt, std, mean_th, v_th, v_ref, v_ema, children, xi, best, worst, mask)


class SpoTask(StepwiseTask):
    """SPO: L = -log s(beta (log rho_best - log rho_worst)), rho the clamped policy / reference ratio
    of the children's step densities."""

    def __init__(self, *args: Any, spo: SpoOptions) -> None:
        super().__init__(*args)
        self.spo = spo

    def loss(self, step, rows):
        p = self.step_pair(step, rows)
        idx = torch.arange(len(rows), device=p.x_t.device)
        mean_ref = mlosses.sde_mean(p.x_t, p.v_ref, p.t, p.dt, self.pairing.spo_noise)
        child_w, child_l = p.children[p.best, idx], p.children[p.worst, idx]
        lr_w = mlosses.step_log_ratio(child_w, p.mean_th, mean_ref, p.std)
        lr_l = mlosses.step_log_ratio(child_l, p.mean_th, mean_ref, p.std)
        loss = mlosses.spo_loss(lr_w, lr_l, self.spo.spo_beta, self.spo.spo_clip, p.mask)
        return loss, float(((lr_w > lr_l) & p.mask).float().sum() / p.mask.float().sum().clamp(min=1))


def _velocity_error(v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (v - target).pow(2).flatten(1).mean(dim=1)


class GradSpoTask(StepwiseTask):
    """GradSPO: velocity targets v_EMA(x_t) -/+ g s d with the guidance vector d = (xi_best -
    xi_worst) / 2, errors of policy and reference against them, the Flow-DPO form on those errors
    (g = 0: both targets equal, zero gradient). The EMA copy is updated after every step."""

    def __init__(self, *args: Any, gradspo: GradSpoOptions) -> None:
        super().__init__(*args)
        self.gradspo = gradspo
        self.ema: list[torch.Tensor] | None = None

    def velocity_before_policy(self, x_t, timestep, cond, shape):
        family = self.family
        if self.ema is None:
            self.ema = online.lora_snapshot(family)
        with online.swapped_lora(family, self.ema):
            return family.predict(family.transformer, x_t, timestep, cond, shape).float()

    def loss(self, step, rows):
        config = self.config
        p = self.step_pair(step, rows)
        idx = torch.arange(len(rows), device=p.x_t.device)
        xi_w, xi_l = p.xi[p.best, idx], p.xi[p.worst, idx]
        t, dt = p.t, p.dt
        coef = 1.0 + mlosses.sde_std(t, self.pairing.spo_noise).pow(2) * (1.0 - t) / (2.0 * t.clamp(min=1e-4))
        scale = p.std / ((-dt) * coef)
        target_w, target_l = mlosses.gradspo_targets(p.v_ema, 0.5 * (xi_w - xi_l), scale, self.gradspo.gradspo_g)
        beta_t = losses.beta_at(config.beta, t, config.beta_schedule)
        z = losses.dpo_margin(_velocity_error(p.v_th, target_w), _velocity_error(p.v_ref, target_w),
                              _velocity_error(p.v_th, target_l), _velocity_error(p.v_ref, target_l), beta_t)
        per = -torch.nn.functional.logsigmoid(z)
        m = p.mask.to(per)
        return (per * m).sum() / m.sum().clamp(min=1.0), float(((z.detach() > 0) & p.mask).float().mean())

    def after_step(self, step):
        if self.ema is not None:
            online.ema_update(self.ema, self.family, self.gradspo.gradspo_ema)


def _build(inputs: TaskInputs, kind: type[StepwiseTask], **own: Any) -> BuiltTask:
    items, what = training_clips(inputs)
    config = inputs.config
    reward = WeightedReward(inputs.family, config.option(RewardModelOptions).reward_model, inputs.weights,
                            "--reward-model")
    task = kind(inputs.family, items, config, inputs.prompts, what, config.option(StepPairOptions),
                config.option(OnlineOptions), reward, **own)
    return task, clips_held_out(inputs), {"train_items": len(items), "items": what}


def build_spo(inputs: TaskInputs) -> BuiltTask:
    return _build(inputs, SpoTask, spo=inputs.config.option(SpoOptions))


def build_gradspo(inputs: TaskInputs) -> BuiltTask:
    return _build(inputs, GradSpoTask, gradspo=inputs.config.option(GradSpoOptions))

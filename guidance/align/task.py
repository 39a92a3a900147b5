"""What a method contributes to an ``nrg align`` step, and the seeded draws every method shares.

The training loop (:mod:`guidance.align.trainer`) is the same for every method: minibatches, AdamW on
the LoRA, evaluations, saving. A :class:`Task` is the part that differs: the items an epoch iterates
over and the loss of a minibatch. Each method builds its own (:mod:`guidance.align.methods`);
Flow-DPO's :class:`DpoTask` lives here because several reuse it (ABC, hybrid and SPRO train on
Flow-DPO pairs).

Every draw of a step comes from a CPU generator seeded by :func:`derived_seed` of (seed, step, ...),
so a step depends only on the run's seed, the step number and the weights: runs are reproducible and
a resumed run continues exactly as the uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from guidance.align import losses
from guidance.align.config import AlignConfig
from guidance.align.data import OrientedPairs, winners_losers
from guidance.align.lora import adapter_disabled
from guidance.align.noising import prediction_errors
from guidance.families.base import PipelineFamily
from guidance.train.preference_data import PreferenceData
from guidance.train.reward import PromptCache, cat_conditioning


def derived_seed(*parts: int) -> int:
    """A generator seed from integers, stable across processes and machines (a SHA-256 of the parts)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**63)


def draw_t_and_noise(shape: torch.Size, count: int, seed: int, step: int, t_min: float,
                     t_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise levels t ~ U(t_min, t_max) [count] and the noise [count, *shape] of one step, from a
    CPU generator of (seed, step): the same on every device."""
    generator = torch.Generator().manual_seed(derived_seed(seed, step, 0x7))
    t = t_min + (t_max - t_min) * torch.rand(count, generator=generator)
    return t, torch.randn((count, *shape), generator=generator)


class Task:
    """What differs between the methods: the items of an epoch and the loss of a minibatch.

    ``keys`` has one entry per training item; items with equal keys (one latent shape) may share a
    minibatch. ``loss(step, rows)`` returns the minibatch's loss and its training accuracy (the share
    of pairs ranked right), or None where the method has no such figure.
    """

    keys: list[Any]
    #: The run's total steps (set by the trainer before the first step; online schedules use it).
    total: int = 0

    def loss(self, step: int, rows: list[int]) -> tuple[torch.Tensor, float | None]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after the optimizer step of ``step`` (lagging / EMA copies update here)."""


class DpoTask(Task):
    """Flow-DPO on oriented preference pairs: winner and loser noised with one shared t and noise
    tensor, reference errors with the adapter disabled, the loss of :func:`losses.flow_dpo_loss`.

    ``pair_loss`` replaces that loss with one built on the same errors and margin: the composable
    terms (IS-DAA, TVKD, Diff-UAPA: ``guidance.align.methods.flow_dpo_task.ComposedDpoLoss``) or ABC's
    classification loss. It has ``loss(task, err, ref, beta_t, weights, x0, noise, t, cond, shape, rows)``.
    """

    def __init__(self, family: PipelineFamily, data: PreferenceData, pairs: OrientedPairs, config: AlignConfig,
                 prompts: PromptCache, pair_loss: Any = None) -> None:
        self.family, self.data, self.pairs, self.config, self.prompts = family, data, pairs, config, prompts
        self.keys = [(data.shapes[i], tuple(data.latents_a[i].shape)) for i in pairs.index]
        self.pair_loss = pair_loss

    def loss(self, step: int, rows: list[int]) -> tuple[torch.Tensor, float | None]:
        family, config = self.family, self.config
        device = family.device
        win, lose = (x.to(device) for x in winners_losers(self.data, self.pairs, rows))
        t, noise = draw_t_and_noise(win.shape[1:], len(rows), config.seed, step, config.t_min, config.t_max)
        t, noise = t.to(device), noise.to(device)
        shape = self.data.shapes[self.pairs.index[rows[0]]]
        cond = self.prompts([self.data.prompts[self.pairs.index[r]] for r in rows])
        both, x0, n2, t2 = cat_conditioning([cond, cond]), torch.cat([win, lose]), torch.cat([noise, noise]), torch.cat([t, t])
        with adapter_disabled(family):
            ref = prediction_errors(family, family.transformer, x0, n2, t2, both, shape)
        err = prediction_errors(family, family.transformer, x0, n2, t2, both, shape)
        b = len(rows)
        beta_t = losses.beta_at(config.beta, t, config.beta_schedule)
        weights = torch.tensor([self.pairs.weight[r] for r in rows], device=device)
        if self.pair_loss is not None:
            return self.pair_loss.loss(self, err, ref, beta_t, weights, x0, n2, t2, both, shape, rows)
        loss, z = losses.flow_dpo_loss(err[:b], ref[:b], err[b:], ref[b:], beta_t, weights)
        return loss, float((z > 0).float().mean())

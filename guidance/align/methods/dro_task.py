"""Diffusion-DRO's task (declared in :mod:`.dro`).

The lagging copy is kept in memory: a run resumed from ``align_state`` re-creates it from the resumed
adapter, so resuming is not bit-exact (as for every online method).
"""

from __future__ import annotations

import torch

from guidance.align.config import AlignConfig
from guidance.align.methods import losses as mlosses
from guidance.align.methods import online
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.common import ClipItem, ClipTask, clips_held_out, training_clips
from guidance.align.methods.dro import DroOptions
from guidance.align.methods.shared import OnlineOptions
from guidance.align.task import derived_seed
from guidance.families.base import PipelineFamily
from guidance.train.reward import PromptCache, cat_conditioning


class DroTask(ClipTask):
    """Experts (the data's clips) against online negatives the lagging copy samples for the same
    prompts; hinge loss of ``mlosses.dro_loss``. The lagging copy is the adapter as it was at the
    last multiple of ``--dro-lag`` steps (the base model before the first refresh)."""

    def __init__(self, family: PipelineFamily, items: list[ClipItem], config: AlignConfig, prompts: PromptCache,
                 what: str, dro: DroOptions, sampling: OnlineOptions) -> None:
        super().__init__(family, items, config, prompts, what)
        self.dro, self.sampling = dro, sampling
        self.lagging: list[torch.Tensor] | None = None

    def loss(self, step, rows):
        config, sampling = self.config, self.sampling
        expert, prompts, shape = self.batch(rows)
        if self.lagging is None:
            self.lagging = online.lora_snapshot(self.family)
        seeds = [derived_seed(config.seed, step, r, 0xD20) % (2**31) for r in rows]
        with online.swapped_lora(self.family, self.lagging):
            negative = online.sample_latents(self.family, prompts, shape, sampling.online_steps, seeds,
                                             sampling.online_cfg)
        cond = self.prompts(prompts)
        err, ref, _ = self.errors(torch.cat([expert, negative.to(expert)]), step, cat_conditioning([cond, cond]), shape)
        b = len(rows)
        d = err - ref
        loss, diff = mlosses.dro_loss(d[:b], d[b:], self.dro.dro_margin)
        return loss, float((diff < -self.dro.dro_margin).float().mean())

    def after_step(self, step):
        if (step + 1) % self.dro.dro_lag == 0:
            self.lagging = online.lora_snapshot(self.family)


def build(inputs: TaskInputs) -> BuiltTask:
    items, what = training_clips(inputs)
    task = DroTask(inputs.family, items, inputs.config, inputs.prompts, what, inputs.config.option(DroOptions),
                   inputs.config.option(OnlineOptions))
    return task, clips_held_out(inputs), {"train_items": len(items), "items": what}

"""SUDO's task (declared in :mod:`.sudo`)."""

from __future__ import annotations

import torch

from guidance.align import losses
from guidance.align.config import AlignConfig
from guidance.align.methods import losses as mlosses
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.common import ClipItem, ClipTask, clips_held_out, step_generator, training_clips
from guidance.align.methods.sudo import SudoOptions
from guidance.align.methods.transforms import make_losers, parse_transforms
from guidance.families.base import PipelineFamily
from guidance.train.reward import PromptCache, cat_conditioning


class SudoTask(ClipTask):
    """Winners from the data, losers made from them (``transforms.make_losers``); the authors' loss
    (1 - c) DPO + c e_th(winner)."""

    def __init__(self, family: PipelineFamily, items: list[ClipItem], config: AlignConfig, prompts: PromptCache,
                 what: str, sudo: SudoOptions) -> None:
        super().__init__(family, items, config, prompts, what)
        self.sudo = sudo
        self.names = parse_transforms(sudo.sudo_transforms)

    def loss(self, step, rows):
        config, sudo = self.config, self.sudo
        win, prompts, shape = self.batch(rows)
        lose = make_losers(win.cpu(), self.names, step_generator(config, step, 0x5D0),
                           blur_radius=sudo.sudo_blur, noise_std=sudo.sudo_noise).to(win)
        cond = self.prompts(prompts)
        err, ref, t = self.errors(torch.cat([win, lose]), step, cat_conditioning([cond, cond]), shape)
        b = len(rows)
        z = losses.dpo_margin(err[:b], ref[:b], err[b:], ref[b:], losses.beta_at(config.beta, t, config.beta_schedule))
        return mlosses.sudo_loss(z, err[:b], sudo.sudo_sft), float((z.detach() > 0).float().mean())


def build(inputs: TaskInputs) -> BuiltTask:
    items, what = training_clips(inputs)
    task = SudoTask(inputs.family, items, inputs.config, inputs.prompts, what, inputs.config.option(SudoOptions))
    return task, clips_held_out(inputs), {"train_items": len(items), "items": what}

"""Hybrid offline-online's task (declared in :mod:`.hybrid`)."""

from __future__ import annotations

from pathlib import Path

import torch

from guidance.align.config import AlignConfig
from guidance.align.lora import adapter_disabled
from guidance.align.methods import losses as mlosses
from guidance.align.methods import online
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.common import step_generator
from guidance.align.methods.flow_dpo_task import composed_pair_loss, training_pairs
from guidance.align.methods.hybrid import HybridOptions
from guidance.align.methods.shared import OnlineOptions
from guidance.align.noising import prediction_errors
from guidance.align.report import held_out_pairs
from guidance.align.task import DpoTask, Task, derived_seed, draw_t_and_noise
from guidance.families.base import VideoShape


class HybridTask(Task):
    """Cycles of N offline Flow-DPO steps on the preference pairs and M online steps of generalisation
    recovery: the flow-matching loss e_th on the base model's own samples (adapter disabled) of a
    broad prompt set (``--online-prompts``, default the data's training prompts). M = 0 is Flow-DPO."""

    def __init__(self, dpo: DpoTask, config: AlignConfig, hybrid: HybridOptions, sampling: OnlineOptions,
                 prompt_list: list[str], shape: VideoShape) -> None:
        self.dpo, self.config, self.hybrid, self.sampling = dpo, config, hybrid, sampling
        self.keys = dpo.keys
        self.prompt_list, self.shape = prompt_list, shape

    def loss(self, step, rows):
        config, sampling = self.config, self.sampling
        if mlosses.hybrid_phase(step, self.hybrid.hybrid_offline, self.hybrid.hybrid_online) == "offline":
            return self.dpo.loss(step, rows)
        family = self.dpo.family
        gen = step_generator(config, step, 0x4B1)
        picks = torch.randint(len(self.prompt_list), (len(rows),), generator=gen).tolist()
        prompts = [self.prompt_list[i] for i in picks]
        seeds = [derived_seed(config.seed, step, j, 0x4B2) % (2**31) for j in range(len(rows))]
        with adapter_disabled(family):
            x0 = online.sample_latents(family, prompts, self.shape, sampling.online_steps, seeds, sampling.online_cfg)
        t, noise = draw_t_and_noise(x0.shape[1:], len(rows), config.seed, step, config.t_min, config.t_max)
        err = prediction_errors(family, family.transformer, x0, noise.to(x0.device), t.to(x0.device),
                                self.dpo.prompts(prompts), self.shape)
        return err.mean(), None


def build(inputs: TaskInputs) -> BuiltTask:
    config = inputs.config
    hybrid = config.option(HybridOptions)
    data, pairs = training_pairs(inputs)
    info = {"pairs": len(data), "train_pairs": len(pairs.index)}
    pair_loss, extra = composed_pair_loss(inputs.family, data, pairs, config, inputs.weights)
    dpo = DpoTask(inputs.family, data, pairs, config, inputs.prompts, pair_loss)
    prompt_list = _read_prompts(hybrid.online_prompts) if hybrid.online_prompts else sorted(
        {data.prompts[i] for i in pairs.index})
    shapes = {data.shapes[i] for i in pairs.index}
    if len(shapes) != 1:
        raise ValueError("--method hybrid samples one video shape; the pairs have several")
    task = HybridTask(dpo, config, hybrid, config.option(OnlineOptions), prompt_list, shapes.pop())
    info.update(extra, online_prompts=len(prompt_list))
    return task, held_out_pairs(data, inputs.weights), info


def _read_prompts(path: str) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--online-prompts {path}: no prompt")
    return lines

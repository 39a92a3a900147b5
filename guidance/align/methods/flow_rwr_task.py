"""Flow-RWR's task (declared in :mod:`.flow_rwr`): flow matching on scored clips, weighted by
exp(r / tau) normalised to mean 1 over the training clips."""

from __future__ import annotations

import torch

from guidance.align import losses
from guidance.align.config import AlignConfig
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.flow_rwr import RwrOptions
from guidance.align.noising import prediction_errors
from guidance.align.report import held_out_clip_pairs, held_out_pairs
from guidance.align.scored_clips import ScoredClips
from guidance.align.task import Task, draw_t_and_noise
from guidance.families.base import PipelineFamily
from guidance.train.reward import PromptCache


class RwrTask(Task):
    """Items are the training clips; one t and noise per clip; ``losses.flow_rwr_loss``."""

    def __init__(self, family: PipelineFamily, clips: ScoredClips, index: list[int], weights: torch.Tensor,
                 config: AlignConfig, prompts: PromptCache) -> None:
        self.family, self.clips, self.index, self.weights, self.config, self.prompts = (
            family, clips, index, weights, config, prompts)
        self.keys = [(clips.shapes[i], tuple(clips.latents[i].shape)) for i in index]

    def loss(self, step: int, rows: list[int]) -> tuple[torch.Tensor, float | None]:
        family, config = self.family, self.config
        device = family.device
        items = [self.index[r] for r in rows]
        x0 = torch.stack([self.clips.latents[i] for i in items]).to(device)
        t, noise = draw_t_and_noise(x0.shape[1:], len(rows), config.seed, step, config.t_min, config.t_max)
        cond = self.prompts([self.clips.prompts[i] for i in items])
        err = prediction_errors(family, family.transformer, x0, noise.to(device), t.to(device), cond,
                                self.clips.shapes[items[0]])
        return losses.flow_rwr_loss(err, self.weights[rows].to(device)), None


def build(inputs: TaskInputs) -> BuiltTask:
    data, weights = inputs.data, inputs.weights
    if not isinstance(data, ScoredClips):
        raise ValueError("--method flow-rwr trains on scored clips (clips.jsonl); got preference pairs")
    rewards = data.combined(weights)
    index = data.indices("train")
    if not index:
        raise ValueError("the scored clips have no training clip (every clip is in the test split)")
    rwr = losses.rwr_weights(rewards[index], inputs.config.option(RwrOptions).tau)
    task = RwrTask(inputs.family, data, index, rwr, inputs.config, inputs.prompts)
    held_out = (held_out_pairs(inputs.eval_pairs, weights) if inputs.eval_pairs is not None
                else held_out_clip_pairs(data, rewards))
    return task, held_out, {"clips": len(data), "train_clips": len(index), "test_pairs": len(held_out),
                            "reward_mean": float(rewards[index].mean()), "reward_std": float(rewards[index].std()),
                            "weight_max": float(rwr.max()), "weight_min": float(rwr.min()),
                            "effective_sample_size": float(rwr.sum() ** 2 / (rwr ** 2).sum())}

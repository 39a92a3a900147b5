"""What several methods' tasks share: the weighted latent reward model they score with, the training
clips of the methods that take either data kind, and the seeded generator of a step's own draws.

Every draw comes from a generator seeded by (seed, step, salt) (or the round, for SPRO), like
Flow-DPO's, so a step's loss depends only on the run's seed, the step and the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from guidance.align.config import AlignConfig
from guidance.align.data import orient_pairs, winners_losers
from guidance.align.lora import adapter_disabled
from guidance.align.methods.base import TaskInputs
from guidance.align.noising import prediction_errors
from guidance.align.report import HeldOutPairs, held_out_clip_pairs, held_out_pairs
from guidance.align.scored_clips import ScoredClips
from guidance.align.task import Task, derived_seed, draw_t_and_noise
from guidance.families.base import PipelineFamily, VideoShape
from guidance.train.reward import PromptCache

#: A training clip: clean latents, its prompt and its video shape.
ClipItem = tuple[torch.Tensor, str, VideoShape]


class WeightedReward:
    """sum_k w_k r_k(x_t, t, c) of a latent reward model over the run's weighted objectives."""

    def __init__(self, family: PipelineFamily, path: str | Path, weights: dict[str, float], flag: str) -> None:
        from guidance.reward_model import load_reward_model

        self.model = load_reward_model(path, family)
        self.columns = [(self.model.objectives.index(k), w) for k, w in weights.items() if k in self.model.objectives]
        if not self.columns:
            raise ValueError(f"{flag} {path}: the reward model scores {', '.join(self.model.objectives)}, none of the "
                             f"run's objectives {', '.join(weights)}")

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond, shape: VideoShape) -> torch.Tensor:
        scores = self.model(x_t, t, cond, shape).float()
        return sum(w * scores[:, k] for k, w in self.columns)


def step_generator(config: AlignConfig, step: int, salt: int) -> torch.Generator:
    """The CPU generator of one step's own draws (``salt`` tells the methods' draws apart)."""
    return torch.Generator().manual_seed(derived_seed(config.seed, step, salt))


def training_clips(inputs: TaskInputs) -> tuple[list[ClipItem], str]:
    """The training clips and what they are: every scored clip of the train split, or the winners of
    the decided training pairs."""
    data, weights = inputs.data, inputs.weights
    if isinstance(data, ScoredClips):
        return [(data.latents[i], data.prompts[i], data.shapes[i]) for i in data.indices("train")], "clips"
    pairs = orient_pairs(data, weights, data.indices("train"))
    win, _ = winners_losers(data, pairs, range(len(pairs.index))) if pairs.index else ([], [])
    return [(win[r], data.prompts[i], data.shapes[i]) for r, i in enumerate(pairs.index)], "winners (decided pairs)"


def clips_held_out(inputs: TaskInputs) -> HeldOutPairs:
    """The held-out pairs of a method on clips: ``--eval-pairs``' test split if given, else the data's
    test pairs, or pairs of its held-out scored clips."""
    if inputs.eval_pairs is not None:
        return held_out_pairs(inputs.eval_pairs, inputs.weights)
    if isinstance(inputs.data, ScoredClips):
        return held_out_clip_pairs(inputs.data, inputs.data.combined(inputs.weights))
    return held_out_pairs(inputs.data, inputs.weights)


class ClipTask(Task):
    """Items are training clips (latents, prompt, shape); one latent shape per minibatch."""

    def __init__(self, family: PipelineFamily, items: list[ClipItem], config: AlignConfig, prompts: PromptCache,
                 what: str) -> None:
        if not items:
            raise ValueError(f"--method {config.method}: no training {what}")
        self.family, self.items, self.config, self.prompts = family, items, config, prompts
        self.keys = [(shape, tuple(x.shape)) for x, _, shape in items]

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, list[str], VideoShape]:
        x0 = torch.stack([self.items[r][0] for r in rows]).to(self.family.device)
        return x0, [self.items[r][1] for r in rows], self.items[rows[0]][2]

    def errors(self, x0: torch.Tensor, step: int, cond, shape: VideoShape,
               copies: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Policy and reference errors of ``x0`` (copies x the batch, stacked) with one t and noise
        per item shared across the copies."""
        b = x0.shape[0] // copies
        t, noise = draw_t_and_noise(x0.shape[1:], b, self.config.seed, step, self.config.t_min, self.config.t_max)
        t, noise = t.to(x0.device), noise.to(x0.device)
        n, tt = torch.cat([noise] * copies), torch.cat([t] * copies)
        with adapter_disabled(self.family):
            ref = prediction_errors(self.family, self.family.transformer, x0, n, tt, cond, shape)
        err = prediction_errors(self.family, self.family.transformer, x0, n, tt, cond, shape)
        return err, ref, t

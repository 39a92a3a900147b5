"""SPRO's task (declared in :mod:`.spro`): self-play rounds of Flow-DPO pairs.

Each round's pairs come from samples of the policy at the round's first step, drawn from seeds of
(seed, round, prompt, sample); a run resumed mid-round re-creates them from the resumed adapter, so
resuming is not bit-exact (as for every online method).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from guidance.align.config import AlignConfig
from guidance.align.data import OrientedPairs
from guidance.align.methods import online
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.common import WeightedReward, clips_held_out, training_clips
from guidance.align.methods.flow_dpo_task import composed_pair_loss
from guidance.align.methods.frame_judge import FrameJudge
from guidance.align.methods.shared import OnlineOptions, RewardModelOptions
from guidance.align.methods.spro import SproOptions
from guidance.align.task import DpoTask, Task, derived_seed
from guidance.families.base import PipelineFamily, VideoShape
from guidance.train.preference_data import PreferenceData
from guidance.train.reward import PromptCache


class SproJudge:
    """Scores clean latents of one prompt's samples, weighted by the objectives: the reward model at
    t = 0 (``--judge reward``), or the caller's frame judge on the decoded frames (``--judge demo``)."""

    def __init__(self, family: PipelineFamily, judge: str, reward_model: str | None, weights: dict[str, float],
                 prompts: PromptCache, frame_judge: FrameJudge | None) -> None:
        self.family, self.weights, self.prompts = family, weights, prompts
        self.reward = WeightedReward(family, reward_model, weights, "--reward-model") if judge == "reward" else None
        self.frame_judge = frame_judge if judge == "demo" else None
        if judge == "demo":
            if frame_judge is None:
                raise ValueError("--judge demo scores decoded frames with a frame judge, and none was given: the "
                                 "caller of guidance.align.trainer.align passes frame_judge= (nrg align passes "
                                 "the demo world's ground truth)")
            unknown = [k for k in weights if k not in frame_judge.objectives]
            if unknown:
                raise ValueError(f"--judge demo scores {', '.join(frame_judge.objectives)}; --objectives has "
                                 f"{', '.join(unknown)}")

    def __call__(self, latents: torch.Tensor, prompts: list[str], shape: VideoShape) -> torch.Tensor:
        if self.reward is not None:
            t = torch.zeros(latents.shape[0], device=latents.device)
            return self.reward(latents, t, self.prompts(prompts), shape).float().cpu()
        frames = online.decode_frames(self.family, latents, shape)
        return torch.tensor([sum(w * self.frame_judge.score(f.numpy(), p)[k] for k, w in self.weights.items())
                             for f, p in zip(frames, prompts)])


class SproTask(Task):
    """Self-play rounds: at the first step of each of ``--rounds`` rounds, K clips per training prompt
    from the current policy, scored by the judge; each prompt's best and worst (if they differ)
    become a Flow-DPO pair for the round's steps (reference: the base model). The composable options
    (IS-DAA, TVKD) apply to the round's pair loss."""

    def __init__(self, family: PipelineFamily, config: AlignConfig, prompts: PromptCache, weights: dict[str, float],
                 prompt_items: list[tuple[str, VideoShape, tuple]], spro: SproOptions, sampling: OnlineOptions,
                 judge: SproJudge) -> None:
        self.family, self.config, self.prompts, self.weights = family, config, prompts, weights
        self.spro, self.sampling, self.judge = spro, sampling, judge
        self.items = prompt_items
        self.keys = [(shape, latent) for _, shape, latent in prompt_items]
        self.round = -1
        self.inner: DpoTask | None = None
        self.row_of: dict[int, int] = {}
        self.rounds_info: list[dict[str, Any]] = []

    def _generate(self, round_index: int) -> None:
        config, sampling, k = self.config, self.sampling, self.spro.spro_samples
        a, b, prompts, shapes, self.row_of = [], [], [], [], {}
        gaps = []
        for position, (prompt, shape, _) in enumerate(self.items):
            seeds = [derived_seed(config.seed, round_index, position, j, 0x5B2) % (2**31) for j in range(k)]
            latents = online.sample_latents(self.family, [prompt] * k, shape, sampling.online_steps, seeds,
                                            sampling.online_cfg)
            scores = self.judge(latents, [prompt] * k, shape)
            best, worst = int(scores.argmax()), int(scores.argmin())
            if float(scores[best]) == float(scores[worst]):
                continue
            self.row_of[position] = len(a)
            a.append(latents[best].cpu())
            b.append(latents[worst].cpu())
            prompts.append(prompt)
            shapes.append(shape)
            gaps.append(float(scores[best] - scores[worst]))
        self.rounds_info.append({"round": round_index, "pairs": len(a), "mean_gap": sum(gaps) / max(1, len(gaps))})
        if not a:
            self.inner = None
            return
        data = PreferenceData(objectives=("judge",), prompts=prompts, latents_a=a, latents_b=b, shapes=shapes,
                              labels=torch.zeros((len(a), 1), dtype=torch.long), test=torch.zeros(len(a), dtype=torch.bool),
                              lines=list(range(len(a))))
        pairs = OrientedPairs(list(range(len(a))), [True] * len(a), [1.0] * len(a))
        pair_loss, _ = composed_pair_loss(self.family, data, pairs, config, self.weights)
        self.inner = DpoTask(self.family, data, pairs, config, self.prompts, pair_loss)

    def loss(self, step, rows):
        per_round = max(1, math.ceil(self.total / self.spro.rounds))
        round_index = step // per_round
        if round_index != self.round:
            self.round = round_index
            self._generate(round_index)
        kept = [self.row_of[r] for r in rows if r in self.row_of]
        if self.inner is None or not kept:
            zero = sum(p.sum() for p in self.family.transformer.parameters() if p.requires_grad) * 0.0
            return zero, None
        return self.inner.loss(step, kept)


def build(inputs: TaskInputs) -> BuiltTask:
    """SPRO trains on the prompts (and video shapes) of the training clips; their latents are unused."""
    config = inputs.config
    spro = config.option(SproOptions)
    items, _ = training_clips(inputs)
    seen: dict[tuple[str, VideoShape], tuple] = {}
    for x, prompt, shape in items:
        seen.setdefault((prompt, shape), tuple(x.shape))
    prompt_items = [(p, s, latent) for (p, s), latent in seen.items()]
    if not prompt_items:
        raise ValueError("--method spro: no training prompt")
    judge = SproJudge(inputs.family, spro.judge, config.option(RewardModelOptions).reward_model, inputs.weights,
                      inputs.prompts, inputs.frame_judge)
    task = SproTask(inputs.family, config, inputs.prompts, inputs.weights, prompt_items, spro,
                    config.option(OnlineOptions), judge)
    info = {"train_prompts": len(seen), "samples_per_prompt": spro.spro_samples, "rounds": spro.rounds,
            "judge": spro.judge, "round_log": task.rounds_info}
    return task, clips_held_out(inputs), info

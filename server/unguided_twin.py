"""A job's unguided twin (``compare_unguided``): the same request without guidance, run as one more row of
the job's batch, and what guidance changed against it.

A job's ``rewards`` are what guidance optimised, so they look good by construction, and its
``judge_scores`` alone cannot say whether guidance moved them. The twin is the same prompt, seed, shape,
steps, CFG scale and checkpoint with no guidance: it joins the batch with its job, takes the same steps,
so it leaves with it, and is scored by the same reward (final latents) and the same held-out judges
(decoded video). Paired with it, an objective guidance pushed up whose reward rose while a judge's
objective of the same name fell is flagged as reward hacking, by the rule ``nrg eval --tune`` applies
over many clips (``guidance.tuning.paired_change``), here on one pair. Only its figures are kept, not
its video.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from guidance.sample_types import SampleSpec
from guidance.tuning.paired_change import paired_change

#: A twin's sample id in the batch: its job's id and this.
TWIN_SUFFIX = "/unguided"

Scores = Mapping[str, float]
JudgeScores = Mapping[str, Scores]


def twin_id(job_id: str) -> str:
    return job_id + TWIN_SUFFIX


def job_of_twin(sample_id: Hashable) -> str | None:
    """The job whose twin ``sample_id`` is; None for any other sample."""
    if isinstance(sample_id, str) and sample_id.endswith(TWIN_SUFFIX):
        return sample_id[:-len(TWIN_SUFFIX)]
    return None


def twin_sample(sample: SampleSpec) -> SampleSpec:
    """The job's sample without guidance: the same prompt, negative prompt, seed, CFG scale, LoRA and
    input image."""
    return replace(sample, guidance=None)


@dataclass(frozen=True)
class ObjectiveChange:
    """Guided minus its twin on one objective, by the reward and by one judge's objective of that name."""

    objective: str
    judge: str
    #: The job's weight on the objective: guidance pushed it up when positive.
    weight: float
    reward_change: float
    judge_change: float
    #: Guidance pushed it up, the reward rose and the judge fell.
    hacked: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TwinComparison:
    """The twin's figures and the job's changes against it."""

    rewards: Scores | None
    judge_scores: JudgeScores | None
    #: One per (judge, objective) where a judge scores an objective of the reward's name.
    changes: tuple[ObjectiveChange, ...]
    #: Why the twin has no figures (its output was not usable), else None.
    error: str | None = None

    @property
    def reward_hacking(self) -> list[ObjectiveChange] | None:
        """The objectives guidance pushed up that a judge says fell while the reward says rose; None when
        no objective guidance pushed up has a judge's objective of its name, so nothing could be judged."""
        judged = [change for change in self.changes if change.weight > 0]
        return None if not judged else [change for change in judged if change.hacked]

    def result_fields(self) -> dict[str, Any]:
        """The job's result fields ``unguided`` and ``reward_hacking`` (docs/server.md)."""
        hacking = self.reward_hacking
        return {
            "unguided": {"rewards": self.rewards, "judge_scores": self.judge_scores,
                         "changes": [change.to_json() for change in self.changes], "error": self.error},
            "reward_hacking": None if hacking is None else [change.to_json() for change in hacking],
        }


def unusable_twin(problem: str) -> TwinComparison:
    """The comparison when the twin's output failed its checks (NaN, black frames): nothing to compare."""
    return TwinComparison(None, None, (), f"the unguided twin's output is unusable: {problem}")


def compare(weights: Scores, rewards: Scores | None, judge_scores: JudgeScores | None, twin_rewards: Scores | None,
            twin_judge_scores: JudgeScores | None) -> TwinComparison:
    """The job's figures (``rewards``, ``judge_scores``) against its twin's, on every objective of the reward
    that a judge which scored both videos also has; ``weights`` the job's guidance weights."""
    changes = []
    for judge, scores in (judge_scores or {}).items():
        twin_scores = (twin_judge_scores or {}).get(judge, {})
        for objective, reward in (rewards or {}).items():
            if objective not in scores or objective not in twin_scores or objective not in (twin_rewards or {}):
                continue
            pair = paired_change(_one(twin_scores[objective]), _one(scores[objective]),
                                 _one(twin_rewards[objective]), _one(reward), tie_share=0.0)
            weight = float(weights.get(objective, 0.0))
            changes.append(ObjectiveChange(objective, judge, weight, round(pair.reward_mean_change, 6),
                                           round(pair.judge_mean_change, 6), weight > 0 and pair.hacked))
    return TwinComparison(twin_rewards, twin_judge_scores, tuple(changes))


def _one(value: float) -> torch.Tensor:
    """One clip's score as ``paired_change`` takes scores (double: the reported figures exactly)."""
    return torch.tensor([value], dtype=torch.float64)

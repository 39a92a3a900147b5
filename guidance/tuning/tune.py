"""Choose a reward's guidance strength by a judge, on tuning seeds, and report it on other seeds.

Each objective of the reward is guided alone (weight 1) at every candidate strength over the tuning
items (every prompt x ``seeds`` tuning seeds) and compared, pair by pair, with the unguided clip of the
same prompt and seed, by the judge objective mapped to it (``objective_map``). A strength's score is the
mean over the objectives of the net share of clips the judge says improved (``PairedChange.net_share``),
ties broken by the judge's mean gain in unguided spreads, then by the smaller strength. The best is chosen
only if its net share is positive: a strength that does not help the judge is no default.

The report then guides each objective at the strength a request would get (the chosen one, else the
reward's current default) on the report items (report seeds, which no choice looked at) and gives the
judge's verdict beside the reward's own change. The judge is never the reward being tuned: a reward
judging its own steering approves of whatever it pushed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from tqdm.auto import tqdm

from guidance.families.base import PipelineFamily
from guidance.judges import NamedJudge
from guidance.nrg import GuidanceDefaults, GuidanceSpec, defaults_for
from guidance.reward_model import LatentRewardModel, RewardCalibration
from guidance.tuning.calibrate import calibration_from
from guidance.tuning.clips import (
    REPORT_SEED_BASE,
    TUNE_SEED_BASE,
    ClipSettings,
    ScoredClips,
    items,
    score_clips,
)
from guidance.tuning.paired_change import PairedChange, paired_change


@dataclass(frozen=True)
class TuneConfig:
    """What ``nrg eval --tune`` runs with; ``validate`` names the flag of a bad value."""

    prompts: tuple[str, ...]
    strengths: tuple[float, ...]
    mode: str
    window: tuple[float, float]
    clips: ClipSettings
    #: Tuning seeds per prompt (the choice) and report seeds per prompt (the verdict on other seeds).
    seeds: int = 4
    report_seeds: int = 4
    #: Pairs whose judge scores differ by less than this share of the unguided spread are ties.
    tie_share: float = 0.1

    def validate(self) -> None:
        self.clips.validate()
        if not self.prompts:
            raise ValueError("--prompts: the file names no prompt")
        if not self.strengths or not all(math.isfinite(w) and w >= 0 for w in self.strengths):
            raise ValueError(f"--strengths must be finite numbers >= 0; got {list(self.strengths)}")
        if self.seeds < 1 or self.report_seeds < 1:
            raise ValueError(f"--seeds and --report-seeds must be >= 1; got {self.seeds}, {self.report_seeds}")
        if not (self.tie_share >= 0 and math.isfinite(self.tie_share)):
            raise ValueError(f"--tie-share must be a finite number >= 0; got {self.tie_share}")
        try:
            GuidanceSpec({}, self.strengths[0], self.window, self.mode).validate(())  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"--mode / --window: {exc}") from None


@dataclass(frozen=True)
class StrengthScore:
    """One candidate strength on the tuning items: each reward objective's change, guided alone."""

    strength: float
    changes: dict[str, PairedChange]

    @property
    def net_share(self) -> float:
        return sum(c.net_share for c in self.changes.values()) / len(self.changes)

    @property
    def judge_gain(self) -> float:
        return sum(c.judge_gain for c in self.changes.values()) / len(self.changes)

    def to_json(self) -> dict[str, Any]:
        return {"strength": self.strength, "net_share": self.net_share, "judge_gain": self.judge_gain,
                "per_objective": {o: c.to_json() for o, c in self.changes.items()}}


def choose(scores: Sequence[StrengthScore]) -> float | None:
    """The best strength by (net share, judge gain, smaller strength), if the judge says it improved more
    clips than it worsened: a gain inside the tie margins alone is no evidence."""
    best = max(scores, key=lambda s: (s.net_share, s.judge_gain, -s.strength))
    return best.strength if best.net_share > 0 else None


@dataclass(frozen=True)
class TuneOutcome:
    """What ``tune`` found: each strength's score, the choice, the verdict on the report seeds, and the
    calibration its unguided tuning clips give."""

    config: TuneConfig
    judge: str
    objective_map: dict[str, str]
    scores: list[StrengthScore]
    chosen: float | None
    #: The strength the report guided at: ``chosen``, else what a request gets from the reward today.
    reported_strength: float
    #: Per reward objective, guided alone at ``reported_strength`` against unguided, on the report seeds.
    report: dict[str, PairedChange]
    tune_seeds: list[int]
    report_seeds: list[int]
    #: From the unguided tuning clips (None below 2 clips), as ``--calibrate`` would measure it.
    calibration: RewardCalibration | None = None

    @property
    def hacked(self) -> list[str]:
        return [o for o, change in self.report.items() if change.hacked]

    def defaults(self, source: str) -> GuidanceDefaults | None:
        """The chosen guidance defaults (None when no strength helped the judge)."""
        if self.chosen is None:
            return None
        return GuidanceDefaults(self.config.mode, self.chosen, self.config.window, source)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {
            "judge": self.judge, "objective_map": self.objective_map, "prompts": list(self.config.prompts),
            "mode": self.config.mode, "window": list(self.config.window), "strengths": list(self.config.strengths),
            "tie_share": self.config.tie_share,
            "tuning": {"seeds": self.tune_seeds, "scores": [s.to_json() for s in self.scores]},
            "chosen_strength": self.chosen,
            "report": {"seeds": self.report_seeds, "strength": self.reported_strength,
                       "per_objective": {o: c.to_json() for o, c in self.report.items()},
                       "reward_hacking": self.hacked},
            "calibration": None if self.calibration is None else self.calibration.to_json(),
        }


def _changes(reward: LatentRewardModel, columns: Mapping[str, int], tie_share: float, unguided: ScoredClips,
             guided: Mapping[str, ScoredClips]) -> dict[str, PairedChange]:
    """Per reward objective ``o``, its guided-alone clips against the unguided ones, judged on ``columns[o]``."""
    changes = {}
    for k, objective in enumerate(reward.objectives):
        j, clips = columns[objective], guided[objective]
        changes[objective] = paired_change(unguided.judged[:, j], clips.judged[:, j], unguided.rewards[:, k],
                                           clips.rewards[:, k], tie_share)
    return changes


def tune(family: PipelineFamily, reward: LatentRewardModel, judge: NamedJudge, objective_map: Mapping[str, str],
         config: TuneConfig, progress: bool = True) -> TuneOutcome:
    """Choose the strength on the tuning seeds, then report on the report seeds (module docstring).
    ``objective_map`` maps every reward objective to one of the judge's (``resolve_objective_map``)."""
    config.validate()
    columns = {o: judge.objectives.index(objective_map[o]) for o in reward.objectives}
    tune_items = items(config.prompts, TUNE_SEED_BASE, config.seeds)
    report_items = items(config.prompts, REPORT_SEED_BASE, config.report_seeds)
    rows = 1 + len(reward.objectives) * len(config.strengths)
    total = len(tune_items) * rows + len(report_items) * (1 + len(reward.objectives))

    def guided(strength: float) -> dict[str, GuidanceSpec]:
        return {o: GuidanceSpec({o: 1.0}, strength, config.window, config.mode)  # type: ignore[arg-type]
                for o in reward.objectives}

    with tqdm(total=total, desc="tune", unit="clip", disable=not progress) as bar:
        run = partial(score_clips, family, reward, settings=config.clips, judge=judge.judge, judge_name=judge.name,
                      on_batch=bar.update)
        unguided = run(tune_items, None)
        scores = [StrengthScore(w, _changes(reward, columns, config.tie_share, unguided,
                                            {o: run(tune_items, spec) for o, spec in guided(w).items()}))
                  for w in config.strengths]
        chosen = choose(scores)
        reported = chosen if chosen is not None else defaults_for(reward).complete({}, mode=config.mode).strength
        report_unguided = run(report_items, None)
        report = _changes(reward, columns, config.tie_share, report_unguided,
                          {o: run(report_items, spec) for o, spec in guided(reported).items()})
    calibration = (calibration_from(reward.objectives, unguided.rewards, tune_items, "nrg eval --tune")
                   if len(tune_items) >= 2 else None)
    return TuneOutcome(config, judge.name, dict(objective_map), scores, chosen, reported, report,
                       sorted({s for _, s in tune_items}), sorted({s for _, s in report_items}), calibration)

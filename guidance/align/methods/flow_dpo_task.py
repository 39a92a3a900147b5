"""The tasks of Flow-DPO and ABC (declared in :mod:`.flow_dpo`), and the Flow-DPO pair loss with the
composable options (IS-DAA, TVKD, Diff-UAPA) that SPRO's and hybrid's pair steps use too."""

from __future__ import annotations

from typing import Any

import torch

from guidance.align import losses
from guidance.align.config import AlignConfig
from guidance.align.data import OrientedPairs, clip_vote_counts, orient_pairs
from guidance.align.methods import losses as mlosses
from guidance.align.methods.base import BuiltTask, TaskInputs
from guidance.align.methods.common import WeightedReward
from guidance.align.methods.flow_dpo import IsDaaOptions, TvkdOptions, UapaOptions
from guidance.align.report import held_out_pairs
from guidance.align.task import DpoTask
from guidance.families.base import PipelineFamily
from guidance.train.preference_data import PreferenceData


class ComposedDpoLoss:
    """The composable terms on a Flow-DPO pair loss (any subset):

    z <- z - alpha (1 - gamma) [Phi(x_t^w) - Phi(x_t^l)]         (TVKD, --teacher)
    L_i <- -log s(z_i) + map_ratio * MAP_i                         (Diff-UAPA, --uapa-map-ratio)
    L_i <- sg(IS weight_i) * L_i                                   (IS-DAA, --is-clip)
    """

    def __init__(self, is_daa: IsDaaOptions, tvkd: TvkdOptions, uapa: UapaOptions, teacher: WeightedReward | None,
                 counts: dict[int, tuple[float, float, float, float]] | None) -> None:
        self.is_daa, self.tvkd, self.uapa, self.teacher, self.counts = is_daa, tvkd, uapa, teacher, counts

    def loss(self, task: DpoTask, err, ref, beta_t, weights, x0, n2, t2, both, shape, rows):
        b = len(rows)
        z = losses.dpo_margin(err[:b], ref[:b], err[b:], ref[b:], beta_t)
        if self.teacher is not None:
            x_t = task.family.add_noise(x0, n2, t2)
            phi = self.teacher(x_t, t2, both, shape)
            z = z - mlosses.tvkd_shaping(phi[:b], phi[b:], self.tvkd.tvkd_alpha, self.tvkd.tvkd_gamma).to(z)
        map_term = None
        if self.counts is not None:
            c = torch.tensor([self.counts[r] for r in rows], dtype=torch.float32, device=z.device)
            map_term = mlosses.uapa_map_term(z, c[:, 0], c[:, 1], c[:, 2], c[:, 3])
        importance = None
        if self.is_daa.is_clip is not None:
            kappa = beta_t if self.is_daa.is_kappa is None else self.is_daa.is_kappa
            importance = mlosses.is_weight(err[:b] - ref[:b], err[b:] - ref[b:], kappa, self.is_daa.is_clip)
        loss = mlosses.composed_dpo_loss(z, weights, importance, map_term, self.uapa.uapa_map_ratio or 0.0)
        return loss, float((z.detach() > 0).float().mean())


def composed_pair_loss(family: PipelineFamily, data: PreferenceData, pairs: OrientedPairs, config: AlignConfig,
                      weights: dict[str, float]) -> tuple[ComposedDpoLoss | None, dict[str, Any]]:
    """The pair loss of the options given (None when none is: plain Flow-DPO) and what the report notes."""
    is_daa, tvkd, uapa = config.option(IsDaaOptions), config.option(TvkdOptions), config.option(UapaOptions)
    if is_daa.is_clip is None and tvkd.teacher is None and uapa.uapa_map_ratio is None:
        return None, {}
    teacher = None if tvkd.teacher is None else WeightedReward(family, tvkd.teacher, weights, "--teacher")
    counts, info = None, {}
    if uapa.uapa_map_ratio is not None:
        if data.root is None:
            raise ValueError("--uapa-map-ratio needs a preference data set read from a directory (its votes)")
        votes = clip_vote_counts(data.root, data, pairs, weights)
        counts, info = votes.per_row, {"uapa": votes.summary}
    return ComposedDpoLoss(is_daa, tvkd, uapa, teacher, counts), info


class AbcLoss:
    """ABC on Flow-DPO's pairs and forward passes: the loss of ``mlosses.abc_loss`` (pair -> two labels)."""

    def loss(self, task: DpoTask, err, ref, beta_t, weights, x0, n2, t2, both, shape, rows):
        loss, r = mlosses.abc_loss(err[:len(rows)] - ref[:len(rows)], err[len(rows):] - ref[len(rows):], beta_t, weights)
        return loss, float((r[0] > r[1]).float().mean())


def training_pairs(inputs: TaskInputs) -> tuple[PreferenceData, OrientedPairs]:
    """The decided training pairs of a method on preference pairs, winner first."""
    data = inputs.data
    if not isinstance(data, PreferenceData):
        raise ValueError(f"--method {inputs.config.method} trains on preference pairs (pairs.jsonl); got scored clips")
    pairs = orient_pairs(data, inputs.weights, data.indices("train"))
    if not pairs.index:
        raise ValueError(f"no training pair is decided by the labels of {', '.join(inputs.weights)} (all ties or missing)")
    return data, pairs


def build_flow_dpo(inputs: TaskInputs) -> BuiltTask:
    data, pairs = training_pairs(inputs)
    pair_loss, options_info = composed_pair_loss(inputs.family, data, pairs, inputs.config, inputs.weights)
    task = DpoTask(inputs.family, data, pairs, inputs.config, inputs.prompts, pair_loss)
    held_out = held_out_pairs(data, inputs.weights)
    return task, held_out, {"pairs": len(data), "train_pairs": len(pairs.index), "test_pairs": len(held_out),
                            "undecided_train_pairs": len(data.indices("train")) - len(pairs.index), **options_info}


def build_abc(inputs: TaskInputs) -> BuiltTask:
    data, pairs = training_pairs(inputs)
    task = DpoTask(inputs.family, data, pairs, inputs.config, inputs.prompts, AbcLoss())
    return task, held_out_pairs(data, inputs.weights), {"pairs": len(data), "train_pairs": len(pairs.index)}

"""The held-out pairs, their implicit-reward accuracy and the ``align_report.json`` written next to the LoRA.

Implicit reward accuracy: for a held-out pair (winner w, loser l), the implicit reward margin of the
policy against the reference is z = -(1/2) [D(w) - D(l)] with D = e_th - e_ref (the Flow-DPO margin
without beta, whose sign is all that counts). A pair is ranked correctly when z > 0. It is measured at
the midpoints of four noise-level buckets with fixed noise (pair i uses ``EVAL_SEED + i``), so the
figure is comparable between evaluations of one run and between runs. At the start (adapter = 0)
every z is exactly 0: accuracy 0, not 50%, as no pair is ranked yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guidance.align.data import orient_pairs, winners_losers
from guidance.align.lora import adapter_disabled
from guidance.align.noising import prediction_errors
from guidance.align.scored_clips import ScoredClips
from guidance.families.base import PipelineFamily, VideoShape
from guidance.train.preference_data import PreferenceData
from guidance.train.reward import PromptCache, cat_conditioning

REPORT_NAME = "align_report.json"
EVAL_T = (0.125, 0.375, 0.625, 0.875)
EVAL_SEED = 2_000_003


@dataclass
class HeldOutPairs:
    """Held-out pairs oriented winner first (clean latents), with their prompts and shapes."""

    winners: list[torch.Tensor]
    losers: list[torch.Tensor]
    prompts: list[str]
    shapes: list[VideoShape]

    def __len__(self) -> int:
        return len(self.prompts)


def held_out_pairs(data: PreferenceData, weights: dict[str, float]) -> HeldOutPairs:
    """The test split's pairs that the weighted labels decide, winner first."""
    pairs = orient_pairs(data, weights, data.indices("test"))
    win, lose = ([], []) if not pairs.index else winners_losers(data, pairs, range(len(pairs.index)))
    return HeldOutPairs(list(win), list(lose), [data.prompts[i] for i in pairs.index],
                        [data.shapes[i] for i in pairs.index])


def held_out_clip_pairs(clips: ScoredClips, rewards: torch.Tensor) -> HeldOutPairs:
    """Pairs of held-out clips of one prompt (consecutive in file order), the higher reward winning;
    equal rewards give no pair."""
    by_prompt: dict[str, list[int]] = {}
    for i in clips.indices("test"):
        by_prompt.setdefault(clips.prompts[i], []).append(i)
    pairs = HeldOutPairs([], [], [], [])
    for prompt, members in by_prompt.items():
        for a, b in zip(members[0::2], members[1::2]):
            if clips.shapes[a] != clips.shapes[b] or float(rewards[a]) == float(rewards[b]):
                continue
            w, lo = (a, b) if float(rewards[a]) > float(rewards[b]) else (b, a)
            pairs.winners.append(clips.latents[w])
            pairs.losers.append(clips.latents[lo])
            pairs.prompts.append(prompt)
            pairs.shapes.append(clips.shapes[a])
    return pairs


class ImplicitAccuracy:
    """Evaluates held-out pairs; the reference errors are computed once (fixed noise and t)."""

    def __init__(self, family: PipelineFamily, pairs: HeldOutPairs, prompts: PromptCache, batch: int = 8) -> None:
        self.family = family
        self.pairs = pairs
        self.prompts = prompts
        self.batch = batch
        self._reference: torch.Tensor | None = None

    def _errors(self) -> torch.Tensor:
        """Errors [len(EVAL_T), N, 2] (winner, loser) of the current model."""
        family, pairs = self.family, self.pairs
        out = torch.zeros(len(EVAL_T), len(pairs), 2)
        device = family.device
        groups: dict[tuple, list[int]] = {}
        for i in range(len(pairs)):
            groups.setdefault((pairs.shapes[i], tuple(pairs.winners[i].shape)), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.batch):
                rows = members[start:start + self.batch]
                w = torch.stack([pairs.winners[i] for i in rows]).to(device)
                lo = torch.stack([pairs.losers[i] for i in rows]).to(device)
                noise = torch.stack([torch.randn(w.shape[1:], generator=torch.Generator().manual_seed(EVAL_SEED + i))
                                     for i in rows]).to(device)
                cond = self.prompts([pairs.prompts[i] for i in rows])
                both = cat_conditioning([cond, cond])
                for k, level in enumerate(EVAL_T):
                    t = torch.full((2 * len(rows),), level, device=device)
                    with torch.no_grad():
                        e = prediction_errors(family, family.transformer, torch.cat([w, lo]), torch.cat([noise, noise]),
                                              t, both, pairs.shapes[rows[0]]).cpu()
                    out[k, rows, 0] = e[: len(rows)]
                    out[k, rows, 1] = e[len(rows):]
        return out

    def __call__(self) -> dict | None:
        """``{"accuracy", "pairs", "per_t": [...], "mean_margin"}`` (None without held-out pairs)."""
        if not len(self.pairs):
            return None
        if self._reference is None:
            with adapter_disabled(self.family):
                self._reference = self._errors()
        d = self._errors() - self._reference
        z = -0.5 * (d[..., 0] - d[..., 1])
        per_t = (z > 0).float().mean(dim=1)
        return {
            "accuracy": float((z > 0).float().mean()),
            "pairs": len(self.pairs),
            "t": list(EVAL_T),
            "per_t": [float(a) for a in per_t],
            "mean_margin": float(z.mean()),
        }


def format_accuracy(result: dict | None) -> str:
    if result is None:
        return "no held-out pairs: implicit-reward accuracy not measured"
    cells = ", ".join(f"t={t:g}: {100 * a:.1f}%" for t, a in zip(result["t"], result["per_t"]))
    return (f"held-out implicit-reward accuracy {100 * result['accuracy']:.1f}% on {result['pairs']} pairs "
            f"({cells}; mean margin {result['mean_margin']:.3g})")


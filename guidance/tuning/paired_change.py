"""What guidance changed on one objective: guided clips against their unguided twins (same prompt, same
seed), as the judge sees it and, beside it, as the reward sees it.

The judge's verdict is counted per pair: a win or a loss when the two scores differ by at least the tie
margin, ``tie_share`` x the spread of the judge's scores over the unguided clips (as ``nrg reward distill``
labels pairs), else a tie; an unchanged score is a tie even when the unguided clips have no spread. The
reward's own change is reported, never used to choose: a reward that rises while its judge falls is being
gamed (``hacked``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

from guidance.win_rates import WinRate, win_rate


@dataclass(frozen=True)
class PairedChange:
    judge: WinRate
    #: (wins - losses) / clips: the net share of clips the judge says guidance improved. A win *rate*
    #: would favour near-no-op settings (1 win of 1 decisive pair is 100%); this weighs effect and evidence.
    net_share: float
    judge_mean_change: float
    #: ``judge_mean_change`` in units of the judge's unguided spread (in its own units when it has none),
    #: so that objectives of different scales average fairly.
    judge_gain: float
    reward_mean_change: float

    @property
    def hacked(self) -> bool:
        """The reward says guidance helped; the judge's decisive pairs say it hurt."""
        return self.reward_mean_change > 0 and self.judge.rate is not None and self.judge.rate < 0.5

    def to_json(self) -> dict[str, Any]:
        return {"judge": self.judge.to_json(), "net_share": self.net_share,
                "judge_mean_change": self.judge_mean_change, "judge_gain": self.judge_gain,
                "reward_mean_change": self.reward_mean_change, "hacked": self.hacked}


def paired_change(unguided_judge: torch.Tensor, guided_judge: torch.Tensor, unguided_reward: torch.Tensor,
                  guided_reward: torch.Tensor, tie_share: float) -> PairedChange:
    """From per-clip scores [N] of one objective, row ``i`` of each the same prompt and seed."""
    spread = float(unguided_judge.std()) if len(unguided_judge) > 1 else 0.0
    differences = (guided_judge - unguided_judge).tolist()
    stats = win_rate(differences, max(tie_share * spread, sys.float_info.min))
    mean_change = float(torch.tensor(differences).mean())
    return PairedChange(stats, (stats.wins - stats.losses) / len(differences), mean_change,
                        mean_change / spread if spread > 0 else mean_change,
                        float((guided_reward - unguided_reward).mean()))

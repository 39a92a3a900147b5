"""Which clip of a preference pair a run aligns towards, from per-objective labels and weights.

``--objectives vq=1,mq=0.5`` weighs the objectives of the preference data (a bare name has weight 1).
Each pair's labels give s = sum_k w_k y_k with y_k = +1 (A wins), -1 (B wins), 0 (tie or missing).
The winner is A when s > 0 and B when s < 0; pairs with s = 0 (ties, no label, or weighted objectives
that cancel) are not trained on. The pair's loss weight is |s| / sum_k w_k, so a pair every weighted
objective agrees on counts 1 and a pair only a low-weight objective decides counts less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from guidance.train.preference_data import A_WINS, B_WINS, PreferenceData


def parse_objective_weights(text: str | None, available: Sequence[str]) -> dict[str, float]:
    """``"vq=1,mq=0.5"`` or ``"mq"`` -> {objective: weight}; ``None`` weighs every available objective 1."""
    if text is None:
        return {name: 1.0 for name in available}
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"--objectives: weight of {name!r} must be a number; got {value!r}") from None
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"--objectives: weight of {name!r} must be a finite number >= 0; got {weight}")
        if name not in available:
            raise ValueError(f"--objectives: unknown objective {name!r}; the data has {', '.join(available)}")
        if name in weights:
            raise ValueError(f"--objectives: {name!r} is given twice")
        weights[name] = weight
    if not weights or not sum(weights.values()) > 0:
        raise ValueError(f"--objectives must give at least one objective a weight > 0; got {text!r}")
    return weights


@dataclass(frozen=True)
class OrientedPairs:
    """The trainable pairs of a data set, oriented winner first.

    ``index`` into the data set's pairs, ``a_wins`` per pair (True: clip A is the winner), ``weight``
    the pair's loss weight in (0, 1].
    """

    index: list[int]
    a_wins: list[bool]
    weight: list[float]


def orient_pairs(data: PreferenceData, weights: dict[str, float], indices: Sequence[int]) -> OrientedPairs:
    """Winner, loser and loss weight of every pair in ``indices`` that the weighted labels decide."""
    total = sum(weights.values())
    columns = {name: data.objectives.index(name) for name in weights}
    index, a_wins, weight = [], [], []
    for i in indices:
        s = 0.0
        for name, w in weights.items():
            label = int(data.labels[i, columns[name]])
            s += w if label == A_WINS else -w if label == B_WINS else 0.0
        if s != 0.0:
            index.append(int(i))
            a_wins.append(s > 0)
            weight.append(abs(s) / total)
    return OrientedPairs(index, a_wins, weight)


def winners_losers(data: PreferenceData, pairs: OrientedPairs, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked clean latents of the winners and the losers of ``rows`` (positions in ``pairs``)."""
    win, lose = [], []
    for r in rows:
        i = pairs.index[r]
        a, b = data.latents_a[i], data.latents_b[i]
        win.append(a if pairs.a_wins[r] else b)
        lose.append(b if pairs.a_wins[r] else a)
    return torch.stack(win), torch.stack(lose)

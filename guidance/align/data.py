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


# -- Diff-UAPA: votes of annotator groups and each clip's Beta prior ----------------------------------

@dataclass(frozen=True)
class VoteCounts:
    """``per_row[r] = (a_w, b_w, a_l, b_l)``: the Beta prior of the winner and the loser of training
    pair r (a position in the ``OrientedPairs``); ``summary`` for the report."""

    per_row: dict[int, tuple[float, float, float, float]]
    summary: dict[str, object]


def read_vote_groups(root, lines: Sequence[int]) -> dict[int, dict[str, str]]:
    """{line: {objective: group}} from ``pairs.jsonl``'s optional annotator groups.

    A line may carry ``"group": "G"`` (every label of the line is group G's vote) and/or
    ``"groups": {"mq": "G2"}`` (a group per label, overriding ``group``). Lines without either are
    one anonymous group's votes (``""``), so an old data set reads unchanged.
    """
    import json
    from pathlib import Path

    from guidance.train.preference_data import PAIRS_FILE, PreferenceDataError

    wanted, out = set(lines), {}
    path = Path(root) / PAIRS_FILE
    with path.open() as rows:
        for number, text in enumerate(rows, start=1):
            if number not in wanted or not text.strip():
                continue
            row = json.loads(text)
            where = f"{PAIRS_FILE} line {number}"
            group = row.get("group", "")
            if not isinstance(group, str):
                raise PreferenceDataError(f"{where}: group must be a string; got {group!r}")
            per_label = row.get("groups") or {}
            if not isinstance(per_label, dict) or not all(isinstance(v, str) for v in per_label.values()):
                raise PreferenceDataError(f"{where}: groups must be an object of strings like {{\"mq\": \"g1\"}}; "
                                          f"got {per_label!r}")
            out[number] = {objective: per_label.get(objective, group) for objective in row.get("labels", {})}
            out[number].update({k: v for k, v in per_label.items() if k not in out[number]})
    return out


def clip_vote_counts(root, data: PreferenceData, pairs: OrientedPairs, weights: dict[str, float]) -> VoteCounts:
    """Each clip's Beta(a, b) over the votes of every annotator group on the training pairs.

    A vote is one label of one objective the run weighs, cast by the line's group for that label;
    it counts w_k / sum w (so a line whose weighted objectives all agree counts 1): the clip it
    prefers gains a, the other b; a tie adds to both clips' a and b. a = 1 + wins, b = 1 + losses
    (a uniform Beta(1, 1) prior), so the Beta mode is the clip's weighted win rate. Clips are
    identified by their file (``a`` / ``b`` of ``pairs.jsonl``).
    """
    from guidance.train.preference_data import read_pairs

    _, records = read_pairs(root)
    by_line = {r.line: r for r in records}
    train = data.indices("train")
    groups = read_vote_groups(root, [data.lines[i] for i in train])
    total = sum(weights.values())
    wins: dict[str, float] = {}
    losses: dict[str, float] = {}
    group_votes: dict[str, float] = {}
    for i in train:
        record = by_line[data.lines[i]]
        a, b = str(record.a), str(record.b)
        for name, w in weights.items():
            label = record.labels.get(name)
            if label is None or w == 0:
                continue
            share = w / total
            group = groups.get(record.line, {}).get(name, "")
            group_votes[group] = group_votes.get(group, 0.0) + share
            if label == "A":
                wins[a] = wins.get(a, 0.0) + share
                losses[b] = losses.get(b, 0.0) + share
            elif label == "B":
                wins[b] = wins.get(b, 0.0) + share
                losses[a] = losses.get(a, 0.0) + share
            else:
                for clip in (a, b):
                    wins[clip] = wins.get(clip, 0.0) + share
                    losses[clip] = losses.get(clip, 0.0) + share
    per_row = {}
    for r, i in enumerate(pairs.index):
        record = by_line[data.lines[i]]
        w, lo = (str(record.a), str(record.b)) if pairs.a_wins[r] else (str(record.b), str(record.a))
        per_row[r] = (1.0 + wins.get(w, 0.0), 1.0 + losses.get(w, 0.0), 1.0 + wins.get(lo, 0.0), 1.0 + losses.get(lo, 0.0))
    summary = {"groups": sorted(group_votes), "votes_per_group": group_votes, "clips": len(set(wins) | set(losses))}
    return VoteCounts(per_row, summary)

"""SPRO's frame judge: a scorer of one clip's decoded frames, given to the trainer by its caller.

``--method spro --judge demo`` ranks each prompt's self-play samples by their decoded frames instead
of by a latent reward model. What scores the frames is the caller's choice, so that guidance holds no
world of its own: ``nrg align`` passes the demo world's ground-truth metrics
(``demo_world.judge.frame_judge``).

A frame judge scores one clip at a time in Python floats, unlike a :class:`guidance.judges.Judge`
(batched float32 tensors): SPRO weighs the objectives' scores in double precision and keeps the best
and worst sample, so the scores are not rounded before they are ranked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: ``score(frames, prompt)``: frames float [F, H, W, 3] in [0, 1] and the prompt's text -> a score per
#: objective, higher is better.
FrameScorer = Callable[[np.ndarray, str], Mapping[str, float]]


@dataclass(frozen=True)
class FrameJudge:
    """Scores single decoded clips on ``objectives`` (every key ``score`` returns)."""

    objectives: tuple[str, ...]
    score: FrameScorer

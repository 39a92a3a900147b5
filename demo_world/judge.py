"""The demo world's ground truth as a judge: ``nrg serve --judge truth=demo_world.judge:ground_truth``.

On the embedded demo model the truth is known: ``demo_world.metrics`` measures VQ, MQ and TA (and
their parts) from the pixels of any clip of the world's prompts. Served as an operator plugin judge,
every demo job reports them beside the reward it was steered by, so a person sees what guidance did
to the video, not what the optimised reward thinks of itself. Prompts outside the world's grammar
have no truth: the judge refuses them (their jobs carry no ``truth`` scores, see server.judging).

:func:`frame_judge` is the same truth for ``nrg align --method spro --judge demo``, one clip at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from demo_world.metrics import JERK_SCALE, evaluate, evaluate_clip
from demo_world.world import parse_prompt
from guidance.align.methods.frame_judge import FrameJudge
from guidance.judges import DEFAULT_FPS, JudgeError, check_clips, check_scores

#: The metrics, then the measured parts a person can read off a clip (``ClipReport``), each signed so
#: that higher is better, as for every judge: sigma and jerk enter negated.
OBJECTIVES = ("vq", "mq", "ta", "sharpness", "low_background_noise", "low_jerk", "color_ok", "shape_ok",
              "direction_ok")
_SIGNED = {"low_background_noise": ("background_sigma", -1.0), "low_jerk": ("jerk", -1.0)}
#: Jerk is infinite where it cannot be measured (the object seen in fewer than three consecutive frames, or no
#: object); a judge's scores are finite, so the part counts it as this much, where MQ's jerk factor
#: ``exp(-jerk / JERK_SCALE)`` is already below e^-10: no worse clip is told apart beyond it.
JERK_CAP = 10 * JERK_SCALE


class GroundTruthJudge:
    objectives = OBJECTIVES
    differentiable: frozenset[str] = frozenset()

    def score(self, frames: torch.Tensor, prompts: Sequence[str], fps: float = DEFAULT_FPS) -> torch.Tensor:
        check_clips("ground_truth", frames, prompts)
        rows = []
        for clip, prompt in zip(frames.detach().float().cpu(), prompts):
            try:
                target = parse_prompt(prompt)
            except ValueError as exc:
                raise JudgeError(f"judge ground_truth: {exc}") from None
            report = evaluate_clip(clip, target).as_dict()
            report["jerk"] = min(report["jerk"], JERK_CAP)
            rows.append([sign * float(report[field]) for field, sign in
                         (_SIGNED.get(name, (name, 1.0)) for name in OBJECTIVES)])
        return check_scores("ground_truth", OBJECTIVES, torch.tensor(rows), len(rows))


def ground_truth(device: str) -> GroundTruthJudge:
    """The plugin factory (the metrics run on the host whatever ``device`` is)."""
    return GroundTruthJudge()


def frame_judge() -> FrameJudge:
    """The ground truth as SPRO's frame judge (``nrg align --method spro --judge demo``): VQ, MQ and TA
    of one clip, as :func:`demo_world.metrics.evaluate` measures them."""
    return FrameJudge(objectives=("vq", "mq", "ta"), score=evaluate)

"""Refuse to call a broken sample a success: NaN or inf latents, non-finite or all-black frames.

NaN latents decode to NaN frames, which the uint8 cast turns into an all-black video that would
otherwise be reported as a normal result. The sampler records the first step at which each sample's
latents went non-finite (``SampleResult.nonfinite_steps``); this module turns that, and a check of the
decoded frames, into one clear message per broken sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from guidance.sample_types import SampleResult


def output_problems(result: SampleResult, steps: int | Sequence[int]) -> list[str | None]:
    """Per returned sample (row of ``result``): why its output is unusable, or None if it is fine.
    ``steps`` is the step count of every sample, or one per row (samples of a continuous batch)."""
    problems: list[str | None] = [None] * len(result.ids)
    totals = [steps] * len(problems) if isinstance(steps, int) else list(steps)
    for row, step in enumerate(result.nonfinite_steps):
        if step:
            problems[row] = (f"non-finite latents (NaN or inf) after denoising step {step} of {totals[row]}; "
                             "try float32, another seed or another number of steps")
    if result.frames is None:
        return problems
    flat = result.frames.flatten(1)
    finite = torch.isfinite(flat).all(1).tolist()
    lit = (flat.nan_to_num(0.0).amax(1) > 0).tolist()
    for row in range(len(problems)):
        if problems[row] is None and not finite[row]:
            problems[row] = "the decoded frames are non-finite (NaN or inf) although the latents were finite"
        elif problems[row] is None and not lit[row]:
            problems[row] = "the decoded frames are all black"
    return problems

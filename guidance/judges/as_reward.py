"""A judge as the reward of the search modes: candidates ranked by what the judge sees.

``best_of_n`` and ``fk`` (``guidance.search``) score particles of a sample at a few noise levels and
keep the best. With a judge the score is the judge's verdict on the decoded clean estimate, as
Video-T1, EvoSearch and LatSearch rank candidates: x0 = x_t - t v(x_t, t) for flow-matching models
(one extra denoiser pass, cond only), decoded by the pipeline's VAE and scored with the prompt's text
(``TextConditioning.texts``). No gradient passes the decoder here, so a judge serves the
gradient-free modes only (``gradient_free``: ``guidance.batch_state.check_specs`` refuses the others).
"""

from __future__ import annotations

import torch

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape
from guidance.judges.base import DEFAULT_FPS, Judge


class JudgeReward:
    """:class:`guidance.rewards.RewardFunction` over noisy latents, from a judge of decoded frames."""

    gradient_free = True

    def __init__(self, family: PipelineFamily, judge: Judge, fps: float = DEFAULT_FPS) -> None:
        if family.prediction != "flow":
            raise ValueError(f"a judge ranks candidates of flow-matching models (x0 = x_t - t v); "
                             f"{family.name} predicts {family.prediction}")
        self.family, self.judge, self.fps = family, judge, fps
        self.objectives = tuple(judge.objectives)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning,
                 shape: VideoShape) -> torch.Tensor:
        if len(cond.texts) != latents.shape[0]:
            raise ValueError("a judge needs the prompts' text: the conditioning carries none (build it with "
                             "guidance.batch_state.BatchState, which records it)")
        x0 = self.family.clean_estimate(latents, t, cond, shape)
        generators = [torch.Generator(device=latents.device).manual_seed(0) for _ in range(latents.shape[0])]
        frames = self.family.decode(x0.to(latents.dtype), shape, generators)
        return self.judge.score(frames, list(cond.texts), self.fps).float().to(latents.device)

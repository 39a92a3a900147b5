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

    def clean_estimate(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning,
                       shape: VideoShape) -> torch.Tensor:
        """x0 = x_t - t v(x_t, t); rows at t = 0 are their own clean estimate."""
        t = t.reshape(-1).to(latents.device, torch.float32).expand(latents.shape[0])
        if not bool((t > 0).any()):
            return latents.float()
        timestep = t * float(self.family.pipe.scheduler.config.num_train_timesteps)
        velocity = torch.zeros_like(latents, dtype=torch.float32)
        experts: dict[int, list[int]] = {}  # rows by the denoiser of their timestep (Wan 2.2 has two)
        for row, value in enumerate(timestep.tolist()):
            experts.setdefault(id(self.family.denoiser(torch.tensor(value))), []).append(row)
        for rows in experts.values():
            index = torch.tensor(rows, device=latents.device)
            model = self.family.denoiser(timestep[rows[0]])
            velocity[index] = self.family.predict(model, latents[index].to(self.family.dtype), timestep[index],
                                                  cond.select(rows), shape).float()
        return latents.float() - t.view(-1, *([1] * (latents.ndim - 1))) * velocity

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning,
                 shape: VideoShape) -> torch.Tensor:
        if len(cond.texts) != latents.shape[0]:
            raise ValueError("a judge needs the prompts' text: the conditioning carries none (build it with "
                             "guidance.batch_state.BatchState, which records it)")
        x0 = self.clean_estimate(latents, t, cond, shape)
        generators = [torch.Generator(device=latents.device).manual_seed(0) for _ in range(latents.shape[0])]
        frames = self.family.decode(x0.to(latents.dtype), shape, generators)
        return self.judge.score(frames, list(cond.texts), self.fps).float().to(latents.device)

"""A pipeline whose chosen samples go NaN mid-run, for the non-finite output checks."""

from __future__ import annotations

import torch

from guidance.families.wan import WanFamily


class NanWan(WanFamily):
    """The latents of every prompt containing 'nan' turn NaN at denoising step ``NAN_STEP``; the others
    are untouched (rows are tracked from the prompts of the batch, so no sample may leave it)."""

    NAN_STEP = 2

    def encode_prompts(self, prompts, negative_prompts):
        self.poisoned = torch.tensor(["nan" in p for p in prompts])
        return super().encode_prompts(prompts, negative_prompts)

    def set_timesteps(self, steps, shape):
        timesteps = super().set_timesteps(steps, shape)
        self.nan_timestep = float(timesteps[self.NAN_STEP - 1])
        return timesteps

    def predict(self, model, latents, timesteps, cond, shape):
        out = super().predict(model, latents, timesteps, cond, shape)
        at_step = timesteps.reshape(-1).expand(latents.shape[0]) == self.nan_timestep
        if latents.shape[0] == len(self.poisoned):
            out[self.poisoned.to(out.device) & at_step] = float("nan")
        return out

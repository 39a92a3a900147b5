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

    def predict(self, model, latents, timestep, cond, shape, step):
        out = super().predict(model, latents, timestep, cond, shape, step)
        if step == self.NAN_STEP - 1 and latents.shape[0] == len(self.poisoned):
            out[self.poisoned.to(out.device)] = float("nan")
        return out

"""HunyuanVideo text-to-video (``HunyuanVideoPipeline``): flow matching, velocity prediction.

HunyuanVideo is guidance-distilled: the pipeline's ``guidance_scale`` is not classifier-free guidance
but a number embedded into the transformer's conditioning (``guidance``), fixed here at the
pipeline's default :data:`EMBEDDED_GUIDANCE_SCALE`. Real classifier-free guidance is the pipeline's
``true_cfg_scale``, applied only with a negative prompt; a request's ``cfg_scale`` maps to it, so in
this family the default is 1.0 (no unconditional pass), as in ``pipe(...)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE, retrieve_timesteps

from guidance.families.base import DenoiserCall, PipelineFamily, TextConditioning, VideoShape, frames_to_vae_input

#: ``HunyuanVideoPipeline.__call__``'s default: the Llama prompt is padded to this many tokens after
#: the template is cropped, so a sample's embeddings never depend on the longest prompt in its batch.
MAX_SEQUENCE_LENGTH = 256
#: ``HunyuanVideoPipeline.__call__``'s default ``guidance_scale``: the distilled guidance the
#: transformer was trained to embed (times 1000, as the pipeline passes it), not a CFG scale.
EMBEDDED_GUIDANCE_SCALE = 6.0
#: The pipeline's default Llama template; its ``crop_start`` (95) is the token count of the system part
#: the pipeline cuts off the embeddings, and must match the tokenizer (the tiny one is built to).
PROMPT_TEMPLATE = DEFAULT_PROMPT_TEMPLATE
#: ``HunyuanVideoPipeline.check_inputs`` rejects other heights and widths.
PIPELINE_SPATIAL_MULTIPLE = 16


class HunyuanFamily(PipelineFamily):
    """``cond.extras``: ``attention_mask`` (the Llama prompt's, in the transformer's dtype, as the
    pipeline passes it) and ``pooled_projections`` (CLIP's pooled output)."""

    name = "hunyuan"
    label = "HunyuanVideo"
    pipeline_class = "HunyuanVideoPipeline"
    prediction = "flow"
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    block_config_keys = ("num_layers", "num_single_layers")
    default_shape = VideoShape(height=720, width=1280, frames=129)
    default_steps = 50
    #: ``true_cfg_scale``'s default: no unconditional pass (the embedded guidance does the steering).
    default_cfg = 1.0

    def check_shape(self, shape: VideoShape) -> None:
        pipe = self.pipe
        config = self.transformer.config
        multiple = math.lcm(PIPELINE_SPATIAL_MULTIPLE, pipe.vae_scale_factor_spatial * config.patch_size)
        self.check_grid(shape, pipe.vae_scale_factor_temporal, (multiple, multiple), config.patch_size_t)

    def _encode(self, prompts: list[str]) -> TextConditioning:
        embeds, pooled, mask = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_template=PROMPT_TEMPLATE,
            device=self.device,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
        dtype = self.dtype
        return TextConditioning(
            embeds.to(dtype), {"attention_mask": mask.to(dtype), "pooled_projections": pooled.to(dtype)}
        )

    def encode_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None
    ) -> tuple[TextConditioning, TextConditioning | None]:
        cond = self._encode(prompts)
        return cond, None if negative_prompts is None else self._encode(negative_prompts)

    def prepare_latents(self, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        return self.pipe.prepare_latents(
            len(generators), self.transformer.config.in_channels, shape.height, shape.width, shape.frames,
            torch.float32, self.device, generators,
        )

    def set_timesteps(self, steps: int, shape: VideoShape) -> torch.Tensor:
        """The pipeline passes its own linear sigmas (the scheduler then applies its shift)."""
        sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
        timesteps, _ = retrieve_timesteps(self.pipe.scheduler, steps, self.device, sigmas=sigmas)
        self.pipe.scheduler.set_begin_index(0)
        return timesteps

    def denoise(self, call: DenoiserCall) -> torch.Tensor:
        model, latents, timesteps, cond, _ = call
        batch = latents.shape[0]
        guidance = torch.full((batch,), EMBEDDED_GUIDANCE_SCALE, dtype=model.dtype, device=latents.device) * 1000.0
        return model(
            hidden_states=latents.to(model.dtype),
            timestep=timesteps.to(latents.dtype),
            encoder_hidden_states=cond.embeds,
            encoder_attention_mask=cond.extras["attention_mask"],
            pooled_projections=cond.extras["pooled_projections"],
            guidance=guidance,
            return_dict=False,
        )[0]

    def _decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        vae = self.pipe.vae
        video = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        frames = self.pipe.video_processor.postprocess_video(video, output_type="pt")
        return frames.permute(0, 1, 3, 4, 2).float()


    @torch.no_grad()
    def encode(self, frames: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The inverse of :meth:`decode`: the posterior mode times the VAE's ``scaling_factor`` (as
        ``HunyuanVideoImageToVideoPipeline``); float32 like :meth:`prepare_latents`."""
        self.check_shape(shape)
        vae = self.pipe.vae
        z = vae.encode(frames_to_vae_input(frames, shape, vae)).latent_dist.mode()
        return (z * vae.config.scaling_factor).float()

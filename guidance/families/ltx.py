"""LTX-Video text-to-video (``LTXPipeline``): flow matching, velocity prediction on packed latents.

LTX differs from Wan in three ways the adapter has to reproduce: latents live packed as token
sequences ``[B, L, C]`` (the transformer needs the latent grid passed alongside), the schedule is
shifted by the video's sequence length (``mu``), and VAEs of LTX 0.9.1+ condition the decoder on a
timestep and mix fresh noise into the latents before decoding.

Image-to-video (``LTXImageToVideoPipeline``; LTX-Video's transformer does both, so a text-to-video
directory takes images too): the image's VAE latents (a posterior sample, from the sample's generator,
before its noise) replace the first latent frame, whose tokens get timestep 0 in every denoiser call
(a per-token timestep ``t * (1 - mask)``) and are never stepped: their velocity is zero, and so is a
reward's gradient there (``free_latents``). Rows with and without an image share a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor

from guidance.families.base import DenoiserCall, ImageInput, PipelineFamily, TextConditioning, VideoShape, frames_to_vae_input

#: ``LTXPipeline.__call__``'s default; prompts are padded to it, so a sample's embeddings never
#: depend on the longest prompt in its batch.
MAX_SEQUENCE_LENGTH = 128
#: ``LTXPipeline.check_inputs`` rejects any height or width that is not a multiple of 32, whatever
#: the VAE's compression.
PIPELINE_SPATIAL_MULTIPLE = 32
#: The diffusers pipeline of LTX-Video image-to-video directories.
I2V_PIPELINE_CLASS = "LTXImageToVideoPipeline"


class LTXFamily(PipelineFamily):
    """Adapter for ``LTXPipeline``.

    ``frame_rate``, ``decode_timestep`` and ``decode_noise_scale`` are the pipeline call arguments
    of the same names, with the same defaults (LTX 0.9.1+ recommends ``decode_timestep=0.05``,
    ``decode_noise_scale=0.025``). The pipeline's ``guidance_rescale`` is not supported: its default
    (0) leaves CFG exactly ``u + c * (cond - u)``, which is what the sampler computes. A VAE with
    ``decoder_inject_noise`` draws that noise from torch's global RNG inside ``vae.decode`` (diffusers
    passes it no generator), so such a VAE is reproducible neither here nor in the pipeline.
    """

    name = "ltx"
    label = "LTX"
    pipeline_class = "LTXPipeline"
    prediction = "flow"
    block_lists = ("transformer_blocks",)
    block_config_keys = ("num_layers",)
    default_shape = VideoShape(height=512, width=704, frames=161)
    default_steps = 50
    default_cfg = 3.0

    def __init__(
        self,
        pipe: Any,
        *,
        frame_rate: int = 25,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
    ) -> None:
        super().__init__(pipe)
        self.frame_rate = frame_rate
        self.decode_timestep = decode_timestep
        self.decode_noise_scale = decode_noise_scale

    def _latent_grid(self, shape: VideoShape) -> tuple[int, int, int]:
        """(frames, height, width) of the unpacked latent, computed as ``LTXPipeline.__call__`` does."""
        pipe = self.pipe
        return (
            (shape.frames - 1) // pipe.vae_temporal_compression_ratio + 1,
            shape.height // pipe.vae_spatial_compression_ratio,
            shape.width // pipe.vae_spatial_compression_ratio,
        )

    def check_shape(self, shape: VideoShape) -> None:
        pipe = self.pipe
        spatial = pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size
        multiple = math.lcm(PIPELINE_SPATIAL_MULTIPLE, spatial)
        self.check_grid(shape, pipe.vae_temporal_compression_ratio, (multiple, multiple),
                        pipe.transformer_temporal_patch_size)

    def encode_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None
    ) -> tuple[TextConditioning, TextConditioning | None]:
        cond, cond_mask, uncond, uncond_mask = self.pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=negative_prompts,
            do_classifier_free_guidance=negative_prompts is not None,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device=self.device,
        )
        # Embeddings stay in the text encoder's dtype, as the pipeline feeds them to the transformer.
        cond = TextConditioning(cond, {"attention_mask": cond_mask})
        if uncond is None:
            return cond, None
        return cond, TextConditioning(uncond, {"attention_mask": uncond_mask})

    def prepare_latents(self, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        if type(self.pipe).__name__ == I2V_PIPELINE_CLASS:
            # LTXPipeline.prepare_latents' draw (the image-to-video pipeline's takes an image first).
            return self._pack(randn_tensor(self._noise_shape(len(generators), shape), generator=generators,
                                           device=self.device, dtype=torch.float32))
        return self.pipe.prepare_latents(
            len(generators), self.transformer.config.in_channels, shape.height, shape.width, shape.frames,
            torch.float32, self.device, generators,
        )

    def _noise_shape(self, rows: int, shape: VideoShape) -> tuple[int, ...]:
        return (rows, self.transformer.config.in_channels, *self._latent_grid(shape))

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        pipe = self.pipe
        return pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)

    @property
    def image_input(self) -> ImageInput:
        return "optional"

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any], shape: VideoShape,
                      generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """``mask`` (float32 [B, L]: 1 on the first latent frame's tokens of rows with an image) and the
        VAE posterior of each image (``first_frame_mean``, ``first_frame_std``: [B, C, 1, H', W'] in the
        VAE's dtype), which :meth:`prepare_conditioned_latents` samples from the row's generator, as
        ``LTXImageToVideoPipeline.prepare_latents`` does (so ``generators`` go unused here). Rows without
        an image get zeros."""
        pipe, device = self.pipe, self.device
        frames, height, width = self._latent_grid(shape)
        masks, means, stds = [], [], []
        for image in images:
            mask = torch.zeros(1, 1, frames, height, width, device=device, dtype=torch.float32)
            if image is None:
                mean = std = torch.zeros(1, self.transformer.config.in_channels, 1, height, width, device=device,
                                         dtype=pipe.vae.dtype)
            else:
                pixels = pipe.video_processor.preprocess(image, height=shape.height, width=shape.width)
                pixels = pixels.to(device=device, dtype=pipe.text_encoder.dtype)
                posterior = pipe.vae.encode(pixels[0].unsqueeze(0).unsqueeze(2)).latent_dist
                mean, std = posterior.mean, posterior.std
                mask[:, :, 0] = 1.0
            masks.append(self._pack(mask).squeeze(-1))
            means.append(mean)
            stds.append(std)
        return {"mask": torch.cat(masks), "first_frame_mean": torch.cat(means), "first_frame_std": torch.cat(stds)}

    def prepare_conditioned_latents(self, shape: VideoShape, generators: list[torch.Generator],
                                    cond: TextConditioning) -> torch.Tensor:
        """Per row, as ``LTXImageToVideoPipeline.prepare_latents`` draws it from the row's generator: the
        image's latents (a posterior sample, normalised) in the first latent frame, then the noise of
        every frame, mixed by the first-frame mask; rows without an image draw their noise only."""
        pipe, device = self.pipe, self.device
        vae = pipe.vae
        frames, height, width = self._latent_grid(shape)
        rows = []
        for row, generator in enumerate(generators):
            noise_shape = self._noise_shape(1, shape)
            if not cond.image_rows[row]:
                rows.append(self._pack(randn_tensor(noise_shape, generator=[generator], device=device,
                                                    dtype=torch.float32)))
                continue
            mean = cond.image["first_frame_mean"][row:row + 1]
            std = cond.image["first_frame_std"][row:row + 1]
            # DiagonalGaussianDistribution.sample with the row's generator.
            init = mean + std * randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            init = pipe._normalize_latents(init.to(torch.float32), vae.latents_mean, vae.latents_std)
            init = init.repeat(1, 1, frames, 1, 1)
            mask = torch.zeros(1, 1, frames, height, width, device=device, dtype=torch.float32)
            mask[:, :, 0] = 1.0
            noise = randn_tensor(noise_shape, generator=generator, device=device, dtype=torch.float32)
            rows.append(self._pack(init * mask + noise * (1 - mask)))
        return torch.cat(rows)

    def free_latents(self, cond: TextConditioning) -> torch.Tensor | None:
        """0 on the first latent frame's tokens of rows with an image (they stay the image's), else 1;
        [B, L, 1], broadcastable to the packed latents."""
        if not cond.has_image:
            return None
        return (1 - cond.image["mask"]).unsqueeze(-1)

    def set_timesteps(self, steps: int, shape: VideoShape) -> torch.Tensor:
        """The pipeline's schedule: linear sigmas shifted by ``mu`` from the video's sequence length."""
        scheduler = self.pipe.scheduler
        frames, height, width = self._latent_grid(shape)
        mu = calculate_shift(
            frames * height * width,
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.15),
        )
        sigmas = np.linspace(1.0, 1 / steps, steps)
        timesteps, _ = retrieve_timesteps(scheduler, steps, self.device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        return timesteps

    def denoise(self, call: DenoiserCall) -> torch.Tensor:
        model, latents, timestep, cond, shape = call
        pipe = self.pipe
        frames, height, width = self._latent_grid(shape)
        spatial = pipe.vae_spatial_compression_ratio
        mask = cond.image["mask"] if cond.has_image else None
        if mask is not None:
            # LTXImageToVideoPipeline: one timestep per token, 0 on the image's first-frame tokens.
            timestep = timestep.unsqueeze(-1) * (1 - mask)
        pred = model(
            hidden_states=latents.to(model.dtype),
            encoder_hidden_states=cond.embeds.to(model.dtype),
            timestep=timestep,
            encoder_attention_mask=cond.extras["attention_mask"],
            num_frames=frames,
            height=height,
            width=width,
            rope_interpolation_scale=(pipe.vae_temporal_compression_ratio / self.frame_rate, spatial, spatial),
            return_dict=False,
        )[0].float()
        if mask is None:
            return pred
        # The pipeline never steps the first frame: a zero velocity there leaves it exactly as it is.
        return torch.where(mask.unsqueeze(-1) > 0, torch.zeros((), dtype=pred.dtype, device=pred.device), pred)

    def _decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        pipe = self.pipe
        vae = pipe.vae
        batch = latents.shape[0]
        frames, height, width = self._latent_grid(shape)
        latents = pipe._unpack_latents(
            latents, frames, height, width, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        )
        latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        latents = latents.to(pipe.text_encoder.dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            # Drawn even when the scale is 0, as the pipeline does: it advances each sample's generator.
            noise = randn_tensor(latents.shape, generator=generators, device=latents.device, dtype=latents.dtype)
            noise_scale = self.decode_timestep if self.decode_noise_scale is None else self.decode_noise_scale
            timestep = torch.tensor([self.decode_timestep] * batch, device=latents.device, dtype=latents.dtype)
            scale = torch.tensor([noise_scale] * batch, device=latents.device, dtype=latents.dtype)
            scale = scale[:, None, None, None, None]
            latents = (1 - scale) * latents + scale * noise
        video = vae.decode(latents.to(vae.dtype), timestep, return_dict=False)[0]
        frames_out = pipe.video_processor.postprocess_video(video, output_type="pt")
        return frames_out.permute(0, 1, 3, 4, 2).float()


    @torch.no_grad()
    def encode(self, frames: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The inverse of :meth:`decode`: the posterior mode, normalised with the pipeline's
        ``_normalize_latents`` (with the VAE's ``scaling_factor``, which decode divides by) and
        packed into tokens [B, L, C] with ``_pack_latents``; float32 like :meth:`prepare_latents`."""
        self.check_shape(shape)
        pipe = self.pipe
        vae = pipe.vae
        z = vae.encode(frames_to_vae_input(frames, shape, vae)).latent_dist.mode()
        z = pipe._normalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        z = pipe._pack_latents(z, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
        return z.float()

"""Wan 2.1 / 2.2 text-to-video (``WanPipeline``): flow matching, velocity prediction."""

from __future__ import annotations

import torch

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape, frames_to_vae_input

#: ``WanPipeline.__call__``'s default; prompts are padded to it, so a sample's embeddings never
#: depend on the longest prompt in its batch.
MAX_SEQUENCE_LENGTH = 512


class WanFamily(PipelineFamily):
    name = "wan"
    label = "Wan"
    pipeline_class = "WanPipeline"
    prediction = "flow"
    block_lists = ("blocks",)
    default_shape = VideoShape(height=480, width=832, frames=81)
    default_steps = 50
    default_cfg = 5.0

    def check_shape(self, shape: VideoShape) -> None:
        pipe = self.pipe
        patch = (self.transformer or pipe.transformer_2).config.patch_size
        spatial = pipe.vae_scale_factor_spatial
        self.check_grid(shape, pipe.vae_scale_factor_temporal, (spatial * patch[1], spatial * patch[2]))

    def encode_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None
    ) -> tuple[TextConditioning, TextConditioning | None]:
        cond, uncond = self.pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=negative_prompts,
            do_classifier_free_guidance=negative_prompts is not None,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device=self.device,
        )
        cond = TextConditioning(cond.to(self.dtype))
        return cond, None if uncond is None else TextConditioning(uncond.to(self.dtype))

    def prepare_latents(self, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        channels = (self.transformer or self.pipe.transformer_2).config.in_channels
        return self.pipe.prepare_latents(
            len(generators), channels, shape.height, shape.width, shape.frames,
            torch.float32, self.device, generators,
        )

    def set_timesteps(self, steps: int, shape: VideoShape) -> torch.Tensor:
        self.pipe.scheduler.set_timesteps(steps, device=self.device)
        self.pipe.scheduler.set_begin_index(0)
        return self.pipe.scheduler.timesteps

    def denoiser(self, timestep: torch.Tensor) -> torch.nn.Module:
        """Wan 2.2 A14B hands the low-noise part of the schedule to ``transformer_2``."""
        pipe = self.pipe
        ratio = pipe.config.boundary_ratio
        if ratio is None or timestep >= ratio * pipe.scheduler.config.num_train_timesteps:
            return pipe.transformer
        return pipe.transformer_2

    @property
    def denoisers(self) -> tuple[torch.nn.Module, ...]:
        pipe = self.pipe
        return (pipe.transformer,) if getattr(pipe, "transformer_2", None) is None else (
            pipe.transformer, pipe.transformer_2)

    def predict(
        self,
        model: torch.nn.Module,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: TextConditioning,
        shape: VideoShape,
    ) -> torch.Tensor:
        batch = latents.shape[0]
        t = timesteps.reshape(-1).expand(batch)
        if self.pipe.config.expand_timesteps:
            # Wan 2.2 TI2V: one timestep per latent token (all equal in text-to-video).
            frames, height, width = latents.shape[2:]
            tokens = frames * ((height + 1) // 2) * ((width + 1) // 2)
            t = t.reshape(batch, 1).expand(batch, tokens)
        return model(
            hidden_states=latents.to(model.dtype),
            timestep=t,
            encoder_hidden_states=cond.embeds,
            return_dict=False,
        )[0]

    def _decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        frames = self.pipe.video_processor.postprocess_video(video, output_type="pt")
        return frames.permute(0, 1, 3, 4, 2).float()


    @torch.no_grad()
    def encode(self, frames: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The inverse of :meth:`decode`: the posterior mode, then (z - latents_mean) / latents_std
        (as ``WanVideoToVideoPipeline.prepare_latents``); float32 like :meth:`prepare_latents`."""
        self.check_shape(shape)
        vae = self.pipe.vae
        z = vae.encode(frames_to_vae_input(frames, shape, vae)).latent_dist.mode()
        dim = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, dim, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, dim, 1, 1, 1).to(z.device, z.dtype)
        return ((z - mean) * inv_std).float()

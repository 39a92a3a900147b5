"""Wan 2.1 / 2.2 text-to-video (``WanPipeline``) and image-to-video (``WanImageToVideoPipeline``):
flow matching, velocity prediction.

Image-to-video conditions every denoiser call on the image as ``WanImageToVideoPipeline`` does, in one
of two ways (the latents themselves stay the VAE's channels, so noise, the scheduler step and guidance
are text-to-video's):

- Wan 2.1 I2V and Wan 2.2 I2V-A14B: the condition latents (the first frame's VAE latents followed by
  zero frames, behind a 4-channel mask of the given frame) concatenated to the 16 latent channels (the
  transformer takes 36). Wan 2.1 also gives the CLIP image embedding (``encoder_hidden_states_image``,
  its transformer has ``image_dim``); Wan 2.2 has no image encoder. I2V-A14B's two experts hand over at
  ``boundary_ratio`` as in text-to-video (:meth:`WanFamily.denoiser`), each row at its own timestep, with
  the row's one CFG scale for both: the pipeline's default (``guidance_scale_2`` = ``guidance_scale``).
- Wan 2.2 TI2V-5B (``expand_timesteps``): the image's latents replace the first latent frame of the
  denoiser's input (``(1 - mask) * condition + mask * latents``, ``mask`` 0 on that frame), whose tokens
  get timestep 0. The pipeline steps that frame of its latents all the same (the denoiser never sees it)
  and puts the image's latents back after its loop. The adapter's latents are the pipeline's step for
  step, first frame included, and :meth:`WanFamily.final_latents` puts the image's back before a finished
  row is scored, returned and decoded (and in the clean estimate a judge scores).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from guidance.families.base import DenoiserCall, ImageInput, PipelineFamily, TextConditioning, VideoShape, frames_to_vae_input

#: ``WanPipeline.__call__``'s default; prompts are padded to it, so a sample's embeddings never
#: depend on the longest prompt in its batch.
MAX_SEQUENCE_LENGTH = 512
#: The diffusers pipeline of Wan image-to-video directories.
I2V_PIPELINE_CLASS = "WanImageToVideoPipeline"


def _clean_prompts_without_ftfy(pipe: Any) -> None:
    """diffusers' ``WanImageToVideoPipeline`` cleans prompts with ``ftfy`` without checking that it is
    installed (``WanPipeline`` checks), so without ftfy it cannot encode a prompt. Its prompt encoding is
    a copy of ``WanPipeline``'s, so this pipeline object then gets ``WanPipeline``'s, which skips ftfy as
    the text-to-video pipeline does; with ftfy installed nothing changes."""
    from diffusers import WanPipeline
    from diffusers.utils import is_ftfy_available

    if not is_ftfy_available():
        pipe._get_t5_prompt_embeds = types.MethodType(WanPipeline._get_t5_prompt_embeds, pipe)


class WanFamily(PipelineFamily):
    name = "wan"
    label = "Wan"
    pipeline_class = "WanPipeline"
    prediction = "flow"
    block_lists = ("blocks",)
    step_cacheable = True
    default_shape = VideoShape(height=480, width=832, frames=81)
    default_steps = 50
    default_cfg = 5.0

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        #: An image-to-video pipeline: every sample needs an image.
        self.i2v = type(pipe).__name__ == I2V_PIPELINE_CLASS
        if self.i2v:
            if pipe.transformer is None:
                raise ValueError("a Wan image-to-video pipeline without `transformer` (transformer_2 alone, "
                                 "boundary_ratio 1) is not supported")
            _clean_prompts_without_ftfy(pipe)

    @property
    def image_input(self) -> ImageInput:
        return "required" if self.i2v else "none"

    def check_shape(self, shape: VideoShape) -> None:
        pipe = self.pipe
        patch = (self.transformer or pipe.transformer_2).config.patch_size
        spatial = pipe.vae_scale_factor_spatial
        self.check_grid(shape, pipe.vae_scale_factor_temporal, (spatial * patch[1], spatial * patch[2]))

    def encode_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None
    ) -> tuple[TextConditioning, TextConditioning | None]:
        return self.embedded_prompts(prompts, negative_prompts, MAX_SEQUENCE_LENGTH, self.dtype)

    def prepare_latents(self, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        if self.i2v:
            # WanImageToVideoPipeline.prepare_latents' noise: the VAE's channels (the transformer also
            # takes the condition's), drawn with the same call.
            pipe = self.pipe
            grid = (len(generators), pipe.vae.config.z_dim, (shape.frames - 1) // pipe.vae_scale_factor_temporal + 1,
                    shape.height // pipe.vae_scale_factor_spatial, shape.width // pipe.vae_scale_factor_spatial)
            return randn_tensor(grid, generator=generators, device=self.device, dtype=torch.float32)
        channels = (self.transformer or self.pipe.transformer_2).config.in_channels
        return self.pipe.prepare_latents(
            len(generators), channels, shape.height, shape.width, shape.frames,
            torch.float32, self.device, generators,
        )

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any], shape: VideoShape,
                      generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """Each image's conditioning on its own, by the pipeline's ``prepare_latents`` and (Wan 2.1)
        ``encode_image``: nothing drawn at random (the latents are the posterior's mode), so ``generators``
        go unused.

        ``condition`` (float32): mask + the latents of the first frame and zero frames, [B, 4 + C, F', H',
        W'] (Wan 2.1, I2V-A14B); the first frame's latents alone, [B, C, 1, H', W'] (TI2V). ``mask``
        (TI2V only): the pipeline's ``first_frame_mask``, [B, 1, F', H', W'] float32, 0 where the condition
        replaces the latents. ``image_embeds`` (only for a transformer with ``image_dim``, Wan 2.1's): the
        CLIP image encoder's penultimate hidden states, in the transformer's dtype.
        """
        if not self.i2v:
            return super().encode_images(images, shape, generators)
        self.check_images([image is not None for image in images])
        pipe, device = self.pipe, self.device
        grid = (1, pipe.vae.config.z_dim, (shape.frames - 1) // pipe.vae_scale_factor_temporal + 1,
                shape.height // pipe.vae_scale_factor_spatial, shape.width // pipe.vae_scale_factor_spatial)
        parts: dict[str, list[torch.Tensor]] = {}
        for image in images:
            pixels = pipe.video_processor.preprocess(image, height=shape.height, width=shape.width).to(
                device, dtype=torch.float32)
            # Latents given: the pipeline draws no noise and returns what it computes from the image, (latents,
            # condition) or, with expand_timesteps, (latents, condition, first_frame_mask).
            _, condition, *mask = pipe.prepare_latents(pixels, 1, grid[1], shape.height, shape.width, shape.frames,
                                                       torch.float32, device, None, torch.zeros(grid, device=device))
            parts.setdefault("condition", []).append(condition)
            if mask:
                parts.setdefault("mask", []).append(mask[0])
            if pipe.transformer.config.image_dim is not None:
                parts.setdefault("image_embeds", []).append(pipe.encode_image(image, device).to(self.dtype))
        return {key: torch.cat(values) for key, values in parts.items()}

    def free_latents(self, cond: TextConditioning) -> torch.Tensor | None:
        """TI2V: 0 on the first latent frame (the denoiser sees the image's latents there, whatever the
        latents hold), so a reward's push goes to the generated frames alone; [B, 1, F', H', W']."""
        return cond.image.get("mask")

    def final_latents(self, latents: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        """TI2V: the image's latents in the first latent frame, as ``WanImageToVideoPipeline`` puts them
        back after its loop (in float32, as it does)."""
        if "mask" not in cond.image:
            return latents
        mask = cond.image["mask"]
        return ((1 - mask) * cond.image["condition"] + mask * latents.float()).to(latents.dtype)

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

    def denoise(self, call: DenoiserCall) -> torch.Tensor:
        model, latents, t, cond, _ = call
        batch = latents.shape[0]
        image = cond.image
        if self.i2v and not image:
            raise ValueError("this Wan image-to-video model needs every row's image conditioning "
                             "(TextConditioning.image, from encode_images)")
        hidden = latents
        if "mask" in image:
            # Wan 2.2 TI2V: the image's latents in the first latent frame (in float32, then cast), whose
            # tokens get timestep 0: mask * t on the transformer's 2x2 patches, as the pipeline takes them.
            mask = image["mask"]
            hidden = (1 - mask) * image["condition"] + mask * latents
            t = (mask[:, 0, :, ::2, ::2] * t.view(batch, 1, 1, 1)).flatten(1)
        elif self.pipe.config.expand_timesteps:
            # Wan 2.2 TI2V text-to-video: one timestep per latent token, all equal.
            frames, height, width = latents.shape[2:]
            tokens = frames * ((height + 1) // 2) * ((width + 1) // 2)
            t = t.reshape(batch, 1).expand(batch, tokens)
        elif image:
            # Wan 2.1 I2V, Wan 2.2 I2V-A14B: the condition joins the latents' channels (in float32, then cast).
            hidden = torch.cat([latents, image["condition"].to(latents.dtype)], dim=1)
        return model(
            hidden_states=hidden.to(model.dtype),
            timestep=t,
            encoder_hidden_states=cond.embeds,
            # Wan 2.1 I2V: the same image embedding goes with the cond and the uncond prompt.
            encoder_hidden_states_image=image.get("image_embeds"),
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

"""CogVideoX 1.0 / 1.5 text-to-video (``CogVideoXPipeline``) and image-to-video
(``CogVideoXImageToVideoPipeline``): diffusion, v- (or eps-) prediction.

Unlike the flow families, CogVideoX steps with its own DDIM or DPM-Solver++ scheduler, so the sampler
hands every step to :meth:`CogVideoXFamily.scheduler_step`. Latents are [B, F, C, H, W] (frames
before channels). The pipeline's ``use_dynamic_cfg`` (a cosine ramp of the CFG scale over the
schedule, off by default) is not reproduced: samples use their constant per-request scale.

Image-to-video, as ``CogVideoXImageToVideoPipeline`` does it: the image's VAE latents (a posterior sample
drawn from the sample's generator before its noise) as the first latent frame of an otherwise zero clip,
concatenated to the noisy latents on the channels in every denoiser call (the transformer takes twice
the latent channels), and for 1.5 the ``ofs`` embedding (2.0). The latents themselves keep the latent
channels, so noise, the scheduler step, guidance and decoding are text-to-video's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import CogVideoXDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from guidance.families.base import (
    DenoiserCall,
    ImageInput,
    PipelineFamily,
    Prediction,
    TextConditioning,
    VideoShape,
    frames_to_vae_input,
)

#: ``CogVideoXPipeline.__call__``'s default; prompts are padded to it (and models with sin-cos
#: position embeddings need exactly ``max_text_seq_length`` = 226 text tokens).
MAX_SEQUENCE_LENGTH = 226

#: The diffusers pipeline of CogVideoX image-to-video directories.
I2V_PIPELINE_CLASS = "CogVideoXImageToVideoPipeline"
#: ``CogVideoXImageToVideoPipeline``'s ``ofs`` embedding input (CogVideoX 1.5 image-to-video only).
OFS = 2.0

#: Scheduler ``prediction_type`` -> the parameterisation ``guidance_ratio`` works in.
_PREDICTIONS: dict[str, Prediction] = {"v_prediction": "v", "epsilon": "eps"}


class CogVideoXFamily(PipelineFamily):
    name = "cogvideox"
    label = "CogVideoX"
    pipeline_class = "CogVideoXPipeline"
    prediction = "v"
    block_lists = ("transformer_blocks",)
    #: CogVideoXAttnProcessor2_0 calls PyTorch's scaled_dot_product_attention itself.
    attention_dispatch = False
    default_shape = VideoShape(height=480, width=720, frames=49)
    default_steps = 50
    default_cfg = 6.0

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        prediction_type = pipe.scheduler.config.prediction_type
        if prediction_type not in _PREDICTIONS:
            raise ValueError(
                f"unsupported CogVideoX scheduler prediction_type {prediction_type!r}; "
                f"supported: {', '.join(_PREDICTIONS)}"
            )
        # Every released CogVideoX is v-prediction, but the parameterisation is the scheduler's
        # setting, so it is read per pipeline rather than assumed.
        self.prediction = _PREDICTIONS[prediction_type]
        #: An image-to-video pipeline: every sample needs an image.
        self.i2v = type(pipe).__name__ == I2V_PIPELINE_CLASS
        # DPM-Solver++ is a two-step method: each step needs the previous step's x0 prediction and
        # timestep. The pipeline keeps them as loop locals; the adapter keeps them between calls.
        self._timesteps: torch.Tensor | None = None
        self._old_pred_original_sample: torch.Tensor | None = None
        self._rotary_key: tuple[int, int, int, torch.device] | None = None
        self._rotary: tuple[torch.Tensor, torch.Tensor] | None = None

    def _latent_frames(self, shape: VideoShape) -> tuple[int, int]:
        """(latent frames, leading padding frames). CogVideoX 1.5 patches ``patch_size_t`` latent frames
        together, so the pipeline pads the latent video at the front and drops the padding before
        decoding: the output keeps the requested length, and the noise is drawn for the padded one."""
        frames = (shape.frames - 1) // self.pipe.vae_scale_factor_temporal + 1
        patch_t = self.transformer.config.patch_size_t
        padding = 0 if patch_t is None else -frames % patch_t
        return frames + padding, padding

    def check_shape(self, shape: VideoShape) -> None:
        pipe = self.pipe
        config = self.transformer.config
        multiple = pipe.vae_scale_factor_spatial * config.patch_size
        self.check_grid(shape, pipe.vae_scale_factor_temporal, (multiple, multiple))
        for name, value, sample in (
            ("height", shape.height, config.sample_height),
            ("width", shape.width, config.sample_width),
        ):
            native = sample * pipe.vae_scale_factor_spatial
            if config.use_learned_positional_embeddings and value != native:
                raise ValueError(f"{name} must be {native} (learned position embeddings); got {value}")
            if config.use_rotary_positional_embeddings and config.patch_size_t is not None and value > native:
                # 1.5 slices its rotary grid out of a fixed sample_height x sample_width one.
                raise ValueError(f"{name} must be at most {native} for this CogVideoX model; got {value}")

    def encode_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None
    ) -> tuple[TextConditioning, TextConditioning | None]:
        return self.embedded_prompts(prompts, negative_prompts, MAX_SEQUENCE_LENGTH)

    @property
    def image_input(self) -> ImageInput:
        return "required" if self.i2v else "none"

    @property
    def _latent_channels(self) -> int:
        """The noisy latents' channels: the image-to-video transformer also takes the image's."""
        channels = self.transformer.config.in_channels
        return channels // 2 if self.i2v else channels

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any], shape: VideoShape,
                      generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """``image_latents`` [B, F', C, H', W'] in the text encoder's dtype, as
        ``CogVideoXImageToVideoPipeline.prepare_latents`` builds them: each image's VAE posterior sampled
        with its sample's generator (before the noise is drawn from it), scaled, then zero frames (and
        for 1.5, the pipeline's leading copies of the first frames, none when the frames are padded)."""
        if not self.i2v:
            return super().encode_images(images, shape, generators)
        self.check_images([image is not None for image in images])
        if generators is None or len(generators) != len(images):
            raise ValueError("CogVideoX image-to-video samples its image latents with each sample's generator")
        pipe, device = self.pipe, self.device
        dtype = pipe.text_encoder.dtype
        frames = self._latent_frames(shape)[0]
        patch_t = self.transformer.config.patch_size_t
        rows = []
        for image, generator in zip(images, generators):
            pixels = pipe.video_processor.preprocess(image, height=shape.height, width=shape.width).to(device, dtype)
            latents = pipe.vae.encode(pixels.unsqueeze(2)).latent_dist.sample(generator)
            latents = latents.to(dtype).permute(0, 2, 1, 3, 4)
            scale = pipe.vae_scaling_factor_image
            latents = latents / scale if pipe.vae.config.invert_scale_latents else scale * latents
            padding = torch.zeros((1, frames - 1, *latents.shape[2:]), device=device, dtype=dtype)
            latents = torch.cat([latents, padding], dim=1)
            if patch_t is not None:
                latents = torch.cat([latents[:, : latents.size(1) % patch_t], latents], dim=1)
            rows.append(latents)
        return {"image_latents": torch.cat(rows)}

    def prepare_latents(self, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        """Noise in the text encoder's dtype, as the pipeline draws it (``prompt_embeds.dtype``)."""
        padding = self._latent_frames(shape)[1]
        if self.i2v:
            # CogVideoXImageToVideoPipeline.prepare_latents' draw, after its image latents'.
            pipe = self.pipe
            grid = (len(generators), self._latent_frames(shape)[0], self._latent_channels,
                    shape.height // pipe.vae_scale_factor_spatial, shape.width // pipe.vae_scale_factor_spatial)
            noise = randn_tensor(grid, generator=generators, device=self.device, dtype=pipe.text_encoder.dtype)
            return noise * pipe.scheduler.init_noise_sigma
        return self.pipe.prepare_latents(
            len(generators),
            self.transformer.config.in_channels,
            shape.frames + padding * self.pipe.vae_scale_factor_temporal,
            shape.height,
            shape.width,
            self.pipe.text_encoder.dtype,
            self.device,
            generators,
        )

    def set_timesteps(self, steps: int, shape: VideoShape) -> torch.Tensor:
        self.pipe.scheduler.set_timesteps(steps, device=self.device)
        self._timesteps = self.pipe.scheduler.timesteps
        self._old_pred_original_sample = None
        return self._timesteps

    def _rotary_embeddings(self, shape: VideoShape) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The pipeline's rotary embeddings for this shape, computed once per shape."""
        if not self.transformer.config.use_rotary_positional_embeddings:
            return None
        frames = self._latent_frames(shape)[0]
        key = (shape.height, shape.width, frames, self.device)
        if key != self._rotary_key:
            self._rotary = self.pipe._prepare_rotary_positional_embeddings(
                shape.height, shape.width, frames, self.device
            )
            self._rotary_key = key
        return self._rotary

    def denoise(self, call: DenoiserCall) -> torch.Tensor:
        """The prediction in float32, as the pipeline upcasts it before CFG and the scheduler step. An
        image-to-video row's image latents join its latents' channels (cond and uncond alike)."""
        model, latents, timesteps, cond, shape = call
        model_input = self.pipe.scheduler.scale_model_input(latents, timesteps)
        extra = {}
        if cond.image:
            model_input = torch.cat([model_input, cond.image["image_latents"].to(model_input.dtype)], dim=2)
            if self.transformer.config.ofs_embed_dim is not None:
                extra["ofs"] = latents.new_full((1,), OFS)
        elif self.i2v:
            raise ValueError("this CogVideoX image-to-video model needs every row's image conditioning "
                             "(TextConditioning.image, from encode_images)")
        return model(
            hidden_states=model_input.to(model.dtype),
            encoder_hidden_states=cond.embeds.to(model.dtype),
            timestep=timesteps,
            image_rotary_emb=self._rotary_embeddings(shape),
            return_dict=False,
            **extra,
        )[0].float()

    def scheduler_step(
        self,
        pred: torch.Tensor,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        step_index: int,
        generators: list[torch.Generator],
    ) -> torch.Tensor:
        """The pipeline's step; per-sample generators keep DPM-Solver++'s noise batch invariant."""
        scheduler = self.pipe.scheduler
        extra = self.pipe.prepare_extra_step_kwargs(generators, 0.0)
        if isinstance(scheduler, CogVideoXDPMScheduler):
            previous = self._timesteps[step_index - 1] if step_index > 0 else None
            latents_next, self._old_pred_original_sample = scheduler.step(
                pred, self._old_pred_original_sample, timestep, previous, latents, **extra, return_dict=False
            )
        else:
            latents_next = scheduler.step(pred, timestep, latents, **extra, return_dict=False)[0]
        return latents_next.to(latents.dtype)

    def _decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        padding = self._latent_frames(shape)[1]
        video = self.pipe.decode_latents(latents[:, padding:].to(self.pipe.vae.dtype))
        # "pt" is "np" before its host copy (the same denormalised values), and keeps the graph.
        frames = self.pipe.video_processor.postprocess_video(video=video, output_type="pt")
        return frames.permute(0, 1, 3, 4, 2).float()


    @torch.no_grad()
    def encode(self, frames: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The inverse of :meth:`decode`: the posterior mode times the VAE's ``scaling_factor``,
        permuted to [B, F, C, H, W] (as ``CogVideoXVideoToVideoPipeline``), in the dtype of
        :meth:`prepare_latents`. CogVideoX 1.5 layouts get the leading padding frames that
        :meth:`decode` drops, filled with copies of the first latent frames (as the 1.5
        image-to-video pipeline pads its image latents)."""
        self.check_shape(shape)
        vae = self.pipe.vae
        z = vae.encode(frames_to_vae_input(frames, shape, vae)).latent_dist.mode()
        z = (z * vae.config.scaling_factor).permute(0, 2, 1, 3, 4)
        padding = self._latent_frames(shape)[1]
        if padding:
            z = torch.cat([z[:, :padding], z], dim=1)
        return z.to(self.pipe.text_encoder.dtype)

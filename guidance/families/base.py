"""The contract between the shared guided sampler and one diffusers pipeline family.

Each family (Wan, LTX-Video, HunyuanVideo, CogVideoX) wraps a loaded diffusers pipeline and exposes
the handful of operations the sampler needs: encode prompts, draw the initial noise, call the
denoiser, take a scheduler step, decode. Wherever the pipeline already has a helper (``encode_prompt``,
``prepare_latents``, the VAE and its post-processing) the adapter calls it, so that with guidance off
the sampler reproduces ``pipe(...)`` frame for frame. Only the loop itself is ours: diffusers cannot
batch per-sample CFG scales and reward weights or differentiate through the denoiser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch

from guidance.schedule import Schedule

#: Component names of the encoders (``text_encoder``, ``text_encoder_2``, ``image_encoder``).
ENCODER_PREFIXES = ("text_encoder", "image_encoder")

Prediction = Literal["flow", "v", "eps"]
#: What a loaded pipeline does with an image (``PipelineFamily.image_input``).
ImageInput = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class RowAdapters:
    """Each row's LoRA adapter (``index``, -1 for none) and scale, with ``routing``: the context in which a
    denoiser call of exactly these rows applies them (``guidance.multi_lora.MultiLora.routing``)."""

    index: tuple[int, ...]
    scale: tuple[float, ...]
    routing: Callable[[torch.Tensor, torch.Tensor], AbstractContextManager[None]]

    def select(self, rows: list[int]) -> RowAdapters:
        return RowAdapters(tuple(self.index[i] for i in rows), tuple(self.scale[i] for i in rows), self.routing)

    def cat(self, other: RowAdapters | None, other_rows: int) -> RowAdapters:
        """These rows' adapters, then ``other``'s (``other_rows`` rows without one when it is None)."""
        index, scale = (other.index, other.scale) if other is not None else ((-1,) * other_rows, (0.0,) * other_rows)
        return RowAdapters(self.index + index, self.scale + scale, self.routing)


@dataclass
class TextConditioning:
    """Everything the denoiser needs from the prompts, batched on dim 0.

    ``embeds`` is the main sequence of prompt embeddings (what a reward model sees as
    ``prompt_embeds``); ``extras`` holds family-specific tensors such as attention masks or pooled
    projections, each also batched on dim 0. ``texts`` are the prompts' words, one per row, when the
    caller knows them (the steppable batch does): a judge used as a reward reads the prompt, not its
    embedding.

    ``image`` is the image conditioning of image-to-video rows (``PipelineFamily.encode_images``), each
    tensor batched on dim 0 like ``extras``, and ``image_rows`` says, per row, whether the row has an
    image: a row without one (text-to-video beside image-to-video rows, where the model allows it) holds
    zeros. Both are empty when no row has an image. Keeping the image here, beside the prompt, is what
    carries it into every denoiser call: the CFG halves, the particles of the search modes, the reward
    model's trunk and the clean estimate all select and concatenate rows of this object.

    ``adapters`` are the rows' LoRA checkpoints (None when no row has one), carried here for the same
    reason: the clean estimate a judge scores is the denoiser's with the row's adapter, whichever subset
    of rows (a reward chunk, one row, the particles due) it is computed for.
    """

    embeds: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    texts: tuple[str, ...] = ()
    image: dict[str, torch.Tensor] = field(default_factory=dict)
    image_rows: tuple[bool, ...] = ()
    adapters: RowAdapters | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    @property
    def has_image(self) -> bool:
        """Whether some row is conditioned on an image (known on the host: no device read)."""
        return any(self.image_rows)

    def select(self, index: torch.Tensor | list[int]) -> TextConditioning:
        """The conditioning of a subset of samples (for dropping finished or cancelled samples)."""
        idx = torch.as_tensor(index, device=self.embeds.device, dtype=torch.long)
        # The host's own list when given one: reading the indices back from the device would sync it.
        on_host = self.texts or self.image_rows or self.adapters is not None
        rows = ([int(i) for i in index] if isinstance(index, list) else idx.tolist()) if on_host else []
        texts = tuple(self.texts[i] for i in rows) if self.texts else ()
        image_rows = tuple(self.image_rows[i] for i in rows) if self.image_rows else ()
        return TextConditioning(self.embeds[idx], {k: v[idx] for k, v in self.extras.items()}, texts,
                                {k: v[idx.to(v.device)] for k, v in self.image.items()}, image_rows,
                                None if self.adapters is None else self.adapters.select(rows))

    def cat(self, other: TextConditioning) -> TextConditioning:
        """Both batches' conditioning, ``other``'s after this one's (samples joining a batch). Prompts
        are padded to the family's fixed length, so the sequences always line up. Rows of a side
        without images get zeros in the other side's image tensors."""
        if set(self.extras) != set(other.extras):
            raise ValueError(f"conditioning extras differ: {sorted(self.extras)} vs {sorted(other.extras)}")
        texts = self.texts + other.texts if self.texts and other.texts else ()
        image, image_rows = self.image, self.image_rows
        if self.image or other.image:
            mine, theirs = self._image_or_zeros(other), other._image_or_zeros(self)
            if set(mine) != set(theirs):
                raise ValueError(f"image conditioning differs: {sorted(mine)} vs {sorted(theirs)}")
            image = {k: torch.cat([v, theirs[k]]) for k, v in mine.items()}
            image_rows = (self.image_rows or (False,) * len(self)) + (other.image_rows or (False,) * len(other))
        adapters = self.adapters
        if self.adapters is not None or other.adapters is not None:
            mine = self.adapters or RowAdapters((-1,) * len(self), (0.0,) * len(self), other.adapters.routing)
            adapters = mine.cat(other.adapters, len(other))
        return TextConditioning(torch.cat([self.embeds, other.embeds]),
                                {k: torch.cat([v, other.extras[k]]) for k, v in self.extras.items()}, texts,
                                image, image_rows, adapters)

    def _image_or_zeros(self, like: TextConditioning) -> dict[str, torch.Tensor]:
        """This side's image tensors, or zeros shaped like ``like``'s for each of this side's rows."""
        if self.image:
            return self.image
        return {k: v.new_zeros((len(self), *v.shape[1:])) for k, v in like.image.items()}

    def with_image(self, image: dict[str, torch.Tensor], rows: tuple[bool, ...]) -> TextConditioning:
        """This conditioning with ``image`` (one entry per row, ``rows[i]`` whether row i has one)."""
        if len(rows) != len(self) or any(v.shape[0] != len(self) for v in image.values()):
            raise ValueError(f"image conditioning needs one entry per row ({len(self)}); got {len(rows)}")
        return TextConditioning(self.embeds, self.extras, self.texts, dict(image), tuple(rows), self.adapters)

    def detach(self) -> TextConditioning:
        return TextConditioning(self.embeds.detach(), {k: v.detach() for k, v in self.extras.items()}, self.texts,
                                {k: v.detach() for k, v in self.image.items()}, self.image_rows, self.adapters)

    def adapter_routing(self) -> AbstractContextManager[None]:
        """The context in which a denoiser call of these rows applies each row's LoRA adapter (nothing to
        do when no row has one)."""
        adapters = self.adapters
        if adapters is None or all(i < 0 for i in adapters.index):
            return nullcontext()
        device = self.embeds.device
        return adapters.routing(torch.tensor(adapters.index, device=device),
                                torch.tensor(adapters.scale, dtype=torch.float32, device=device))


@dataclass(frozen=True)
class VideoShape:
    """The output shape of a batch: every sample in a batch shares it."""

    height: int
    width: int
    frames: int


class DenoiserCall(NamedTuple):
    """One denoiser call as a family adapter receives it: ``timesteps`` already one per row ([B])."""

    model: torch.nn.Module
    latents: torch.Tensor
    timesteps: torch.Tensor
    cond: TextConditioning
    shape: VideoShape


class PipelineFamily(ABC):
    """Adapter around one loaded diffusers pipeline of a supported family.

    Subclasses set the class attributes and implement the abstract methods; they must keep the
    numerics of the pipeline's own ``__call__`` (same dtypes, same order of operations) so that the
    unguided sampler matches it to 1e-4.
    """

    name: ClassVar[str]
    #: The family's name in messages ("Wan", "LTX", ...).
    label: ClassVar[str]
    pipeline_class: ClassVar[str]
    #: A class default; an adapter may set it per instance (CogVideoX reads its scheduler config).
    prediction: Prediction
    #: Names of the transformer's ``nn.ModuleList`` s of blocks, in execution order. A reward-model
    #: trunk keeps the first N blocks of the first list and none of the others.
    block_lists: ClassVar[tuple[str, ...]]
    #: The transformer config keys that set the length of each of ``block_lists`` (same order), so a
    #: trunk is built at its truncated size instead of building the whole model and cutting it.
    block_config_keys: ClassVar[tuple[str, ...]] = ("num_layers",)
    #: Whether the first of ``block_lists``' blocks take and return the hidden states alone, so that
    #: ``guidance.step_cache`` can run the blocks after the first on a subset of a call's rows.
    step_cacheable: ClassVar[bool] = False
    #: Whether the transformer's attention goes through diffusers' dispatcher, so that
    #: ``set_attention_backend`` changes its kernel (``guidance.attention_backends``).
    attention_dispatch: ClassVar[bool] = True
    default_shape: ClassVar[VideoShape]
    default_steps: ClassVar[int] = 50
    default_cfg: ClassVar[float] = 5.0

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        #: Component names whose weights live in host memory (``offload_encoders``).
        self.offloaded: set[str] = set()
        #: Schedules of a flow Euler scheduler, by (scheduler, steps, shape): pure functions of those.
        self._schedules: dict[tuple[int, int, VideoShape], Schedule] = {}

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def uses_cfg(self, cfg_scale: float) -> bool:
        """Whether the pipeline runs an unconditional pass at this scale (diffusers: scale > 1)."""
        return cfg_scale > 1.0

    def check_grid(
        self, shape: VideoShape, temporal: int, multiple: tuple[int, int], latent_frame_multiple: int = 1
    ) -> None:
        """The rules every family shares: frames = temporal * k + 1 (with k + 1 a multiple of the
        transformer's temporal patch), height and width positive multiples of ``multiple``."""
        model = f"this {self.label} model"
        if shape.frames < 1 or (shape.frames - 1) % temporal != 0:
            raise ValueError(f"frames must be {temporal}*k + 1 for {model}; got {shape.frames}")
        if ((shape.frames - 1) // temporal + 1) % latent_frame_multiple != 0:
            raise ValueError(
                f"frames must be {temporal}*k + 1 with k + 1 a multiple of {latent_frame_multiple} for {model}; "
                f"got {shape.frames}"
            )
        for name, value, step in (("height", shape.height, multiple[0]), ("width", shape.width, multiple[1])):
            if value <= 0 or value % step != 0:
                raise ValueError(f"{name} must be a positive multiple of {step} for {model}; got {value}")

    @property
    def image_input(self) -> ImageInput:
        """Whether a sample may (``optional``), must (``required``) or cannot (``none``) be conditioned
        on an image (image-to-video): what the loaded pipeline allows."""
        return "none"

    def check_images(self, has_image: Sequence[bool]) -> None:
        """``ValueError`` naming the sample when an image is given to a text-to-video-only model or
        missing for a model that needs one."""
        mode = self.image_input
        for i, given in enumerate(has_image):
            if given and mode == "none":
                raise ValueError(f"sample {i}: this {self.label} model is text-to-video only; it takes no image")
            if not given and mode == "required":
                raise ValueError(f"sample {i}: this {self.label} model is image-to-video: every sample needs an "
                                 "image")

    def encode_images(self, images: Sequence[Any], shape: VideoShape,
                      generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """The image conditioning of samples (``TextConditioning.image``), one row per image, as the
        family's image-to-video pipeline computes it from a PIL image (any size: the pipeline resizes
        it for the VAE). ``None`` entries (text-to-video rows, where the model allows them) get zeros.
        What a pipeline draws at random for the image comes from the sample's generator (one per
        image, ``generators``): here when the draw is part of the conditioning and comes before the
        noise (CogVideoX), else in :meth:`prepare_conditioned_latents` (LTX-Video's first frame)."""
        raise ValueError(f"this {self.label} model is text-to-video only; it takes no image")

    def encode_images_one_by_one(self, images: Sequence[Any], shape: VideoShape,
                                 generators: Sequence[torch.Generator]) -> dict[str, torch.Tensor]:
        """:meth:`encode_images` with one image per call, each with its sample's generator: the image
        encoders hold a whole clip's activations per image, and one row per call keeps a row's
        conditioning independent of its batch."""
        parts = [self.encode_images([image], shape, [generator]) for image, generator in zip(images, generators)]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    @property
    def video_input(self) -> bool:
        """Whether a sample may start from a video (video-to-video, SDEdit: its clean latents noised to
        the start of a truncated schedule): flow-matching models, whose noise level is the schedule's
        sigma, unless the model needs an image (Wan image-to-video takes an image, not a clip)."""
        return self.prediction == "flow" and self.image_input != "required"

    def encode_video(self, frames: Sequence[Any], shape: VideoShape) -> torch.Tensor:
        """The clean latents [1, ...] of a clip given as PIL frames at ``shape`` (one per frame), as
        diffusers' video-to-video pipelines take it (``VideoProcessor.preprocess_video``: RGB / 255,
        then [-1, 1]) and encode it: the posterior's mode (:meth:`encode`)."""
        if not self.video_input:
            raise ValueError(f"this {self.label} model cannot start from a video")
        pixels = torch.from_numpy(np.stack([np.asarray(frame.convert("RGB")) for frame in frames]))
        return self.encode((pixels.float() / 255.0).unsqueeze(0), shape)

    def begin_at(self, step_index: int) -> None:
        """Start the scheduler's run at this step of its schedule: a scheduler with per-run state (not a
        plain Euler step) then takes its first step there, as a video-to-video batch does."""
        scheduler = self.pipe.scheduler
        if not hasattr(scheduler, "set_begin_index"):
            raise ValueError(f"{type(scheduler).__name__} cannot start part-way down its schedule")
        scheduler.set_begin_index(step_index)

    def prepare_conditioned_latents(self, shape: VideoShape, generators: list[torch.Generator],
                                    cond: TextConditioning) -> torch.Tensor:
        """Initial latents of rows some of which carry an image (``cond.image``), drawn as the family's
        image-to-video pipeline draws them; by default the image does not change them."""
        return self.prepare_latents(shape, generators)

    def free_latents(self, cond: TextConditioning) -> torch.Tensor | None:
        """Where the latents are generated (1) and where the image holds them fixed (0), broadcastable to
        the latents of ``cond``'s rows; ``None`` when every latent is generated. A reward's gradient is
        zeroed where they are fixed (LTX-Video keeps its first latent frame as the image's)."""
        return None

    def final_latents(self, latents: torch.Tensor, cond: TextConditioning) -> torch.Tensor:
        """The latents of ``cond``'s rows as their pipeline leaves them after its denoising loop: what a
        finished row is scored on, returned as and decoded from, and what a clean estimate is. By default
        the sampled latents themselves; a pipeline that overwrites some after its loop does it here (Wan
        2.2 TI2V puts the image's latents back in the first latent frame, which its loop steps but its
        denoiser never sees), so the sampler needs no family's case of its own."""
        return latents

    @abstractmethod
    def check_shape(self, shape: VideoShape) -> None:
        """Raise ``ValueError`` naming the field and the required multiple when the pipeline would
        silently round the shape (the server must never return a different size than asked)."""

    @abstractmethod
    def encode_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None
    ) -> tuple[TextConditioning, TextConditioning | None]:
        """Conditional and (when ``negative_prompts`` is given) unconditional conditioning."""

    def embedded_prompts(
        self, prompts: list[str], negative_prompts: list[str] | None, max_sequence_length: int,
        dtype: torch.dtype | None = None,
    ) -> tuple[TextConditioning, TextConditioning | None]:
        """The pipeline's own ``encode_prompt`` where it returns the text embeddings alone (Wan, CogVideoX),
        cast to ``dtype`` if given; the uncond half only with ``negative_prompts`` (CFG)."""
        cond, uncond = self.pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=negative_prompts,
            do_classifier_free_guidance=negative_prompts is not None,
            max_sequence_length=max_sequence_length,
            device=self.device,
        )
        if dtype is not None:
            cond, uncond = cond.to(dtype), None if uncond is None else uncond.to(dtype)
        return TextConditioning(cond), None if uncond is None else TextConditioning(uncond)

    def stand_in_conditionings(self, shape: VideoShape, rows: int) -> list[TextConditioning]:
        """What a batch of ``rows`` can give the denoiser, with empty prompts (and ``texts``) and a grey image:
        a prompt's conditioning, and a prompt's with an image's where the model takes one (its image tokens
        change the blocks' input shapes), as ``BatchState`` builds them. For warm-ups and memory probes."""
        cond, _ = self.encode_prompts([""] * rows, None)
        cond = replace(cond, texts=("",) * rows)
        conds = [] if self.image_input == "required" else [cond]
        if self.image_input != "none":
            from PIL import Image

            image = Image.new("RGB", (shape.width, shape.height), (128, 128, 128))
            generators = [torch.Generator("cpu").manual_seed(row) for row in range(rows)]
            conds.append(cond.with_image(self.encode_images_one_by_one([image] * rows, shape, generators),
                                         (True,) * rows))
        return conds

    @abstractmethod
    def prepare_latents(self, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        """Initial noise, one generator per sample, drawn exactly as the pipeline draws it."""

    @abstractmethod
    def set_timesteps(self, steps: int, shape: VideoShape) -> torch.Tensor:
        """Configure the scheduler for ``steps`` steps and return its timesteps."""

    def predict(
        self,
        model: torch.nn.Module,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: TextConditioning,
        shape: VideoShape,
    ) -> torch.Tensor:
        """One denoiser call in the pipeline's own parameterisation (``prediction``). ``timesteps`` is
        one model timestep per row ([B]; a scalar is broadcast here, once for every family): rows of a
        batch may be at different steps of their schedules."""
        return self.denoise(DenoiserCall(model, latents, timesteps.reshape(-1).expand(latents.shape[0]), cond, shape))

    @abstractmethod
    def denoise(self, call: DenoiserCall) -> torch.Tensor:
        """:meth:`predict` of one call, in the family's own way of calling its transformer."""

    def denoiser(self, timestep: torch.Tensor) -> torch.nn.Module:
        """The model that denoises at this timestep (Wan 2.2 switches experts mid-schedule)."""
        return self.transformer

    @property
    def denoisers(self) -> tuple[torch.nn.Module, ...]:
        """Every model :meth:`denoiser` can return; a :class:`Schedule` names one by its index here."""
        return (self.transformer,)

    def schedule(self, steps: int, shape: VideoShape) -> Schedule:
        """A sample's whole schedule for ``steps`` steps at ``shape`` (see ``guidance.schedule``).

        For a plain flow Euler scheduler the tables are pure functions of (steps, shape) and are cached.
        Any other scheduler keeps per-run state (multistep history), so this call also starts a run
        on it: it is made once, when such a batch starts, and the batch steps its rows together.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        euler = self.euler_scheduler
        key = (id(self.pipe.scheduler), steps, shape)
        if euler and key in self._schedules:
            return self._schedules[key]
        timesteps = self.set_timesteps(steps, shape)
        models = self.denoisers
        schedule = Schedule(
            timesteps=tuple(timesteps.tolist()),
            timestep_dtype=timesteps.dtype,
            noise_levels=tuple(self.noise_level(i, t) for i, t in enumerate(timesteps)),
            ratios=tuple(self.guidance_ratio(i, t) for i, t in enumerate(timesteps)),
            dt=tuple(self.euler_dt(i) for i in range(len(timesteps))) if euler else None,
            experts=tuple(next(j for j, m in enumerate(models) if m is self.denoiser(t)) for t in timesteps),
        )
        if euler:
            self._schedules[key] = schedule
        return schedule

    def noise_level(self, step_index: int, timestep: torch.Tensor) -> float:
        """Noise level in [0, 1] (1 = pure noise) at this step: sigma for flow matching, else t/T."""
        scheduler = self.pipe.scheduler
        if self.prediction == "flow":
            return float(scheduler.sigmas[step_index])
        return float(timestep) / float(scheduler.config.num_train_timesteps)

    def guidance_ratio(self, step_index: int, timestep: torch.Tensor) -> float:
        """The factor that turns the reward gradient into a prediction offset, before strength.

        Flow matching (velocity prediction, x_t = (1 - t) x_0 + t noise): t / (1 - t).
        eps-prediction: sqrt(1 - abar).
        v-prediction: with x fixed, eps = sqrt(1-abar) x + sqrt(abar) v, so shifting eps by
        -c sqrt(1-abar) g shifts v by -c sqrt((1-abar)/abar) g. The caller bounds this value.
        """
        if self.prediction == "flow":
            t = self.noise_level(step_index, timestep)
            return float("inf") if t >= 1.0 else t / (1.0 - t)
        abar = float(self.pipe.scheduler.alphas_cumprod[int(timestep)])
        if self.prediction == "eps":
            return (1.0 - abar) ** 0.5
        # Zero-terminal-SNR schedules (CogVideoX) reach abar = 0 exactly at the first timestep.
        return float("inf") if abar <= 0.0 else ((1.0 - abar) / abar) ** 0.5

    @property
    def euler_scheduler(self) -> bool:
        """Whether the scheduler is a plain, deterministic flow Euler step: the fused kernel then takes
        the whole step, and rows can leave or be copied between steps (no per-row scheduler state)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = self.pipe.scheduler
        return isinstance(scheduler, FlowMatchEulerDiscreteScheduler) and not (
            scheduler.config.stochastic_sampling or getattr(scheduler.config, "invert_sigmas", False)
        )

    def euler_dt(self, step_index: int) -> float | None:
        """The step size when the scheduler is a plain flow Euler step, else ``None`` and the
        scheduler's own ``step`` is used."""
        if not self.euler_scheduler:
            return None
        scheduler = self.pipe.scheduler
        return float(scheduler.sigmas[step_index + 1] - scheduler.sigmas[step_index])

    def scheduler_step(
        self,
        pred: torch.Tensor,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        step_index: int,
        generators: list[torch.Generator],
    ) -> torch.Tensor:
        """One scheduler step with the (guided) prediction. ``generators`` (one per sample, in the
        state the pipeline's single generator would be in) serve stochastic schedulers."""
        return self.pipe.scheduler.step(pred, timestep, latents, return_dict=False)[0]

    @abstractmethod
    def _decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        """What :meth:`decode` and :meth:`decode_with_grad` compute, in torch ops only (nothing passes
        through numpy), so that the graph is kept whenever grad mode is on."""

    def tile_vae(self) -> None:
        """Decode and encode in overlapping spatial tiles, one sample at a time: diffusers' VAE tiling and
        slicing, so that a long, large clip's decode holds one tile's activations instead of the whole
        frame's, for every sample at once. Where tiles overlap they are blended, so frames differ from the
        untiled decode's there; clips no larger than one tile (the VAE's default: 256 x 256 on Wan and
        HunyuanVideo, 512 x 512 on LTX-Video, 240 x 360 on CogVideoX) are decoded as before."""
        self.pipe.vae.enable_tiling()
        self.pipe.vae.enable_slicing()

    def encoders(self) -> dict[str, torch.nn.Module]:
        """The pipeline's text and image encoders by component name: they run once per request, forward only,
        and no guidance, checkpoint, LoRA, cache or compilation touches them."""
        return {name: module for name, module in self.pipe.components.items()
                if isinstance(module, torch.nn.Module) and name.startswith(ENCODER_PREFIXES)}

    def offload_encoders(self) -> None:
        """Keep the encoders' weights in host memory and bring each layer to the device only while it runs
        (diffusers' group offloading at leaf level; on CUDA the next layer's copy overlaps the current one's
        work on a side stream). A prompt's encoding then holds a layer or two on the device instead of the
        whole encoder, at the price of copying the encoder once per request; only the encoders, because
        everything else runs every step or is differentiated, rewritten or cached by the server."""
        from diffusers.hooks import apply_group_offloading

        device = self.device
        stream = device.type == "cuda"
        for name, module in self.encoders().items():
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="leaf_level", use_stream=stream, non_blocking=stream)
            self.offloaded.add(name)

    def decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
        """Frames as float32 [B, F, H, W, 3] in [0, 1] on the latents' device, with the values
        ``output_type="np"`` gives. ``generators`` serve VAEs that add decode-time noise (LTX-Video
        0.9.1+). No graph is built: a video VAE's activations are gigabytes per sample."""
        with torch.no_grad():
            return self._decode(latents, shape, generators)

    def decode_with_grad(self, latents: torch.Tensor, shape: VideoShape,
                         generators: list[torch.Generator]) -> torch.Tensor:
        """:meth:`decode` keeping the graph, so that a score of the frames has a gradient with respect
        to the latents (a judge guiding by gradient, the demo world's oracle). The same computation, so
        the same frames; the graph holds the decoder's activations until the backward (about 22 KB per
        output pixel and frame for Wan 2.1's float32 VAE), so callers decode a row at a time."""
        with torch.enable_grad():
            return self._decode(latents, shape, generators)

    def encode(self, frames: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """Clips to latents in the family's layout and normalisation: the inverse convention of
        :meth:`decode` (the same layout :meth:`prepare_latents` gives for ``shape``).

        ``frames``: float [B, F, H, W, 3] in [0, 1] with (F, H, W) = ``shape``. The VAE posterior's
        mode is used (deterministic), as diffusers' video-to-video pipelines do with
        ``sample_mode="argmax"``. Used to train reward models from pixel clips.
        """
        raise NotImplementedError(f"the {self.name} adapter cannot encode clips")

    def clean_estimate(self, latents: torch.Tensor, t: torch.Tensor, cond: TextConditioning,
                       shape: VideoShape) -> torch.Tensor:
        """The denoiser's clean estimate x0 = x_t - t v(x_t, t) of flow-matching latents, in float32
        (cond only, no CFG, each row with its LoRA adapter if ``cond`` carries one; rows at t = 0 are
        their own estimate): what a judge of decoded video scores mid-schedule. Each row goes to the
        denoiser of its timestep (Wan 2.2 has two); the estimate is the pipeline's latents after its loop
        (:meth:`final_latents`)."""
        if self.prediction != "flow":
            raise ValueError(f"the clean estimate x0 = x_t - t v needs a flow-matching model; {self.name} "
                             f"predicts {self.prediction}")
        t = t.reshape(-1).to(latents.device, torch.float32).expand(latents.shape[0])
        if not bool((t > 0).any()):
            return self.final_latents(latents.float(), cond)
        timestep = t * float(self.pipe.scheduler.config.num_train_timesteps)
        velocity = torch.zeros_like(latents, dtype=torch.float32)
        experts: dict[int, list[int]] = {}
        for row, value in enumerate(timestep.tolist()):
            experts.setdefault(id(self.denoiser(torch.tensor(value))), []).append(row)
        for rows in experts.values():
            index = torch.tensor(rows, device=latents.device)
            model = self.denoiser(timestep[rows[0]])
            rows_cond = cond.select(rows)
            with rows_cond.adapter_routing():
                velocity[index] = self.predict(model, latents[index].to(self.dtype), timestep[index], rows_cond,
                                               shape).float()
        return self.final_latents(latents.float() - t.view(-1, *([1] * (latents.ndim - 1))) * velocity, cond)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noisy latents x_t at noise level ``t`` ([B], in [0, 1], 1 = pure noise) of clean
        ``latents`` x_0 with ``noise`` (same shape), in the family's forward process.

        Flow matching (t = sigma): x_t = (1 - t) x_0 + t noise.
        Diffusion (eps or v prediction): with abar the scheduler's ``alphas_cumprod`` at timestep
        round(t (T - 1)), T = ``num_train_timesteps``: x_t = sqrt(abar) x_0 + sqrt(1 - abar) noise.
        Computed in float32 and returned in ``latents``' dtype.
        """
        if noise.shape != latents.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from latents shape {tuple(latents.shape)}")
        t = torch.as_tensor(t, device=latents.device, dtype=torch.float32).reshape(-1).expand(latents.shape[0])
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"noise levels t must lie in [0, 1]; got {t.tolist()}")
        view = (-1,) + (1,) * (latents.ndim - 1)
        x0, eps = latents.float(), noise.to(latents.device, torch.float32)
        if self.prediction == "flow":
            t = t.view(view)
            return ((1.0 - t) * x0 + t * eps).to(latents.dtype)
        scheduler = self.pipe.scheduler
        steps = int(scheduler.config.num_train_timesteps)
        index = torch.round(t * (steps - 1)).long()
        abar = scheduler.alphas_cumprod.to(latents.device, torch.float32)[index].view(view)
        return (abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps).to(latents.dtype)


def frames_to_vae_input(frames: torch.Tensor, shape: VideoShape, vae: torch.nn.Module) -> torch.Tensor:
    """Clips [B, F, H, W, 3] in [0, 1] as a VAE takes them: [B, 3, F, H, W] in [-1, 1], in the VAE's
    dtype and device (diffusers' ``VideoProcessor.preprocess_video`` without resizing)."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [B, F, H, W, 3]; got {tuple(frames.shape)}")
    if tuple(frames.shape[1:4]) != (shape.frames, shape.height, shape.width):
        raise ValueError(
            f"frames are {tuple(frames.shape[1:4])} (frames, height, width) but the shape says "
            f"{(shape.frames, shape.height, shape.width)}"
        )
    param = next(vae.parameters())
    video = frames.to(param.device, torch.float32).permute(0, 4, 1, 2, 3) * 2.0 - 1.0
    return video.to(param.dtype)

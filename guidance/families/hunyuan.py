"""HunyuanVideo text-to-video (``HunyuanVideoPipeline``): flow matching, velocity prediction.

HunyuanVideo is guidance-distilled: the pipeline's ``guidance_scale`` is not classifier-free guidance
but a number embedded into the transformer's conditioning (``guidance``), fixed here at the
pipeline's default :data:`EMBEDDED_GUIDANCE_SCALE`. Real classifier-free guidance is the pipeline's
``true_cfg_scale``, applied only with a negative prompt; a request's ``cfg_scale`` maps to it, so in
this family the default is 1.0 (no unconditional pass), as in ``pipe(...)``.
"""

from __future__ import annotations

import math
import re
import string

import numpy as np
import torch
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE, retrieve_timesteps

from guidance.families.base import PipelineFamily, TextConditioning, VideoShape, frames_to_vae_input

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

    def predict(
        self,
        model: torch.nn.Module,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: TextConditioning,
        shape: VideoShape,
    ) -> torch.Tensor:
        batch = latents.shape[0]
        guidance = torch.full((batch,), EMBEDDED_GUIDANCE_SCALE, dtype=model.dtype, device=latents.device) * 1000.0
        return model(
            hidden_states=latents.to(model.dtype),
            timestep=timesteps.reshape(-1).expand(batch).to(latents.dtype),
            encoder_hidden_states=cond.embeds,
            encoder_attention_mask=cond.extras["attention_mask"],
            pooled_projections=cond.extras["pooled_projections"],
            guidance=guidance,
            return_dict=False,
        )[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, shape: VideoShape, generators: list[torch.Generator]) -> torch.Tensor:
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


def _tiny_llama_tokenizer():
    """A Llama tokenizer (BPE with byte fallback) over a fixed vocabulary and explicit merges.

    Every word of the prompt template is one piece, ``\\n\\n`` too, and a begin-of-text token is added,
    as in Llama 3: the template's system part then takes exactly ``crop_start`` tokens, so the crop
    removes all of it and none of the user's prompt. Merges grow each word from its ``▁`` (a space)
    one character at a time, so these words always come out whole; the template's three bare words
    (right after a special token or a newline) rank after them. Any other bare word, such as the
    first word of a prompt, comes out in smaller pieces, as an unlisted word does.
    """
    from transformers import LlamaTokenizer

    from guidance.families.tiny import _WORDS

    specials = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<pad>"]
    template_specials = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    template_words = re.findall(r"[A-Za-z]+", PROMPT_TEMPLATE["template"])
    vocab: dict[str, int] = {}
    for piece in specials + template_specials + [f"<0x{b:02X}>" for b in range(256)]:
        vocab[piece] = len(vocab)
    for char in "▁\n" + string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    merges = [("\n", "\n")]
    vocab["\n\n"] = len(vocab)
    spaced = ["▁" + w for w in dict.fromkeys(_WORDS + template_words)]
    bare = ["system", "user", "Describe"]
    for word in spaced + bare:
        for k in range(1, len(word)):
            merge = (word[:k], word[k])
            if word[: k + 1] not in vocab:
                vocab[word[: k + 1]] = len(vocab)
                merges.append(merge)
    return LlamaTokenizer(
        vocab=vocab, merges=merges, unk_token="<unk>", bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>", pad_token="<pad>", add_bos_token=True, padding_side="right",
        extra_special_tokens=template_specials,
    )


def _tiny_clip_tokenizer():
    """A CLIP tokenizer over all 256 byte symbols (so nothing is ever unknown) plus the demo words.

    Merges grow each word from its end-of-word piece leftwards, so within a word only one merge is
    ever possible and every listed word comes out whole. The special tokens take the last ids, as in
    CLIP, whose text model pools at the end-of-text token.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    from guidance.families.tiny import _WORDS

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {piece: i for i, piece in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    merges = []
    for word in dict.fromkeys(w.lower() for w in _WORDS):
        for k in range(len(word) - 2, -1, -1):
            piece = word[k:] + "</w>"
            if piece not in vocab:
                vocab[piece] = len(vocab)
                merges.append((word[k], word[k + 1:] + "</w>"))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build_tiny_pipeline():
    """A ~1 MB HunyuanVideoPipeline (1 dual- and 1 single-stream block, 4 latent channels, 4x spatial /
    4x temporal VAE, 3-layer Llama and 2-layer CLIP text encoders)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    tokenizer = _tiny_llama_tokenizer()
    tokenizer_2 = _tiny_clip_tokenizer()
    # hidden_states[-3] is what the pipeline takes, so 3 layers make it the output of a real layer.
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer_2.bos_token_id, eos_token_id=tokenizer_2.eos_token_id,
        pad_token_id=tokenizer_2.pad_token_id,
    ))
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 3,
        up_block_types=("HunyuanVideoUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=4,
        temporal_compression_ratio=4,
    )
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
        text_embed_dim=32, pooled_projection_dim=32, rope_axes_dim=(4, 4, 4),
    )
    return HunyuanVideoPipeline(
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
    )

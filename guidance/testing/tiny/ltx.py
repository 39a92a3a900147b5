"""The tiny LTX-Video pipelines (``LTXPipeline``; ``LTXImageToVideoPipeline`` for image-to-video)."""

from __future__ import annotations


def build():
    """A ~1 MB LTXPipeline: 2 blocks, 8 latent channels, a 16x spatial / 4x temporal VAE whose
    decoder is timestep-conditioned (as in LTX 0.9.1+), and LTX-Video's own scheduler config."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    from guidance.testing.tiny.text import tiny_t5_encoder, tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 16),
        decoder_block_out_channels=(8, 8, 8),
        layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False),
        decoder_spatio_temporal_scaling=(True, True, False),
        decoder_inject_noise=(False, False, False, False),
        upsample_residual=(False, False, False),
        upsample_factor=(1, 1, 1),
        timestep_conditioning=True,
        patch_size=4,
    )
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=2, caption_channels=32,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05, shift=1.0,
        shift_terminal=0.1, use_dynamic_shifting=True,
    )
    return LTXPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=tiny_t5_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )


def build_i2v():
    """The same tiny model as ``LTXImageToVideoPipeline`` (LTX-Video's transformer does both)."""
    from diffusers import LTXImageToVideoPipeline

    return LTXImageToVideoPipeline(**build().components)

"""The tiny CogVideoX pipelines (``CogVideoXPipeline``, ``CogVideoXImageToVideoPipeline``)."""

from __future__ import annotations

from guidance.families.cogvideox import MAX_SEQUENCE_LENGTH


def build():
    """A tiny CogVideoXPipeline (CogVideoX-5b layout: rotary positions, v-prediction DDIM with the
    released zero-terminal-SNR schedule; 8x spatial / 4x temporal VAE, 16 latent channels)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    from guidance.testing.tiny.text import tiny_t5_encoder, tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=32,
        sample_width=32,
    )
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, time_embed_dim=32,
        text_embed_dim=32, num_layers=2, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=MAX_SEQUENCE_LENGTH,
        use_rotary_positional_embeddings=True,
    )
    scheduler = CogVideoXDDIMScheduler(
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
        clip_sample=False, snr_shift_scale=1.0,
    )
    return CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(len(tokenizer)),
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=scheduler,
    )


def build_i2v():
    """A tiny CogVideoXImageToVideoPipeline: the text-to-video parts and a transformer that takes the 16
    latent channels plus the image latents' 16 (CogVideoX-5b-I2V's layout)."""
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel

    text = build()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=32, out_channels=16, time_embed_dim=32,
        text_embed_dim=32, num_layers=2, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=MAX_SEQUENCE_LENGTH,
        use_rotary_positional_embeddings=True,
    )
    return CogVideoXImageToVideoPipeline(
        tokenizer=text.tokenizer,
        text_encoder=text.text_encoder,
        vae=text.vae,
        transformer=transformer.eval(),
        scheduler=text.scheduler,
    )

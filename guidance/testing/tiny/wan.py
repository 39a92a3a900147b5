"""The tiny Wan pipelines (``WanPipeline``; ``WanImageToVideoPipeline`` for image-to-video: Wan 2.1's by
default, Wan 2.2's by ``I2V_VARIANTS``)."""

from __future__ import annotations


def build():
    """A ~1 MB WanPipeline (2 blocks, 16 latent channels, 4x spatial / 4x temporal VAE)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from guidance.testing.tiny.text import tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    vae = AutoencoderKLWan(
        base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32,
        )).eval(),
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def build_i2v():
    """A tiny WanImageToVideoPipeline (Wan 2.1 I2V): the text-to-video parts, a tiny CLIP vision encoder
    (16x16 crops in 4x4 patches, 17 tokens of 8 channels) and a transformer that takes the 16 latent
    channels plus the 20 of the condition and attends to the image embedding."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    text = build()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=8, added_kv_proj_dim=24,
    )
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=8, projection_dim=8, num_hidden_layers=2, num_attention_heads=2, image_size=16,
        intermediate_size=16, patch_size=4,
    ))
    return WanImageToVideoPipeline(
        tokenizer=text.tokenizer,
        text_encoder=text.text_encoder,
        vae=text.vae,
        scheduler=text.scheduler,
        image_processor=CLIPImageProcessor(crop_size=16, size={"shortest_edge": 16}),
        image_encoder=image_encoder.eval(),
        transformer=transformer.eval(),
    )


def _i2v_transformer(in_channels: int, out_channels: int):
    """A tiny Wan 2.2 image-to-video transformer: no ``image_dim`` (no CLIP image embedding to attend to)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=out_channels, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def build_i2v_a14b():
    """A tiny Wan 2.2 I2V-A14B: ``WanImageToVideoPipeline`` with two expert transformers (36 input channels:
    the latents' 16 and the condition's 20, as Wan 2.1 I2V) and no image encoder. The experts hand over at
    ``boundary_ratio`` 0.8 (the released model's is 0.9), so that the tiny defaults' 4-step schedule (shift
    3: timesteps 1000, 858, 602, 9) runs two steps on each."""
    from diffusers import WanImageToVideoPipeline

    text = build()
    return WanImageToVideoPipeline(
        tokenizer=text.tokenizer,
        text_encoder=text.text_encoder,
        vae=text.vae,
        scheduler=text.scheduler,
        transformer=_i2v_transformer(36, 16),
        transformer_2=_i2v_transformer(36, 16),
        boundary_ratio=0.8,
    )


def build_ti2v_5b():
    """A tiny Wan 2.2 TI2V-5B: ``WanImageToVideoPipeline`` with ``expand_timesteps`` (the image's latents
    are the first latent frame, whose tokens get timestep 0), one transformer on the latents' channels
    alone, no image encoder, and a tiny Wan 2.2 VAE (48 channels, 2x2 patches, 16x spatial compression)
    whose latents are normalised by a mean and std that are not 0 and 1, so that a missed normalisation
    shows."""
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

    text = build()
    z_dim = 48
    vae = AutoencoderKLWan(
        base_dim=4, z_dim=z_dim, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
        dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        scale_factor_spatial=16, scale_factor_temporal=4,
        latents_mean=[0.1 * (i % 5 - 2) for i in range(z_dim)], latents_std=[0.5 + 0.1 * (i % 4) for i in range(z_dim)],
    )
    return WanImageToVideoPipeline(
        tokenizer=text.tokenizer,
        text_encoder=text.text_encoder,
        vae=vae.eval(),
        scheduler=text.scheduler,
        transformer=_i2v_transformer(z_dim, z_dim),
        expand_timesteps=True,
    )


#: Wan 2.2's image-to-video pipelines, by the name ``build_tiny_pipeline``'s ``variant`` takes.
I2V_VARIANTS = {"i2v-a14b": build_i2v_a14b, "ti2v-5b": build_ti2v_5b}

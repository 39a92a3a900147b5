"""The tiny Wan pipelines (``WanPipeline``; ``WanImageToVideoPipeline`` for image-to-video)."""

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

"""The tiny HunyuanVideo pipeline (``HunyuanVideoPipeline``) and its tokenizers, built to the family's
prompt template: the template's system part takes exactly ``crop_start`` tokens."""

from __future__ import annotations

import re
import string

from guidance.families.hunyuan import PROMPT_TEMPLATE
from guidance.testing.tiny.text import WORDS


def tiny_llama_tokenizer():
    """A Llama tokenizer (BPE with byte fallback) over a fixed vocabulary and explicit merges.

    Every word of the prompt template is one piece, ``\\n\\n`` too, and a begin-of-text token is added,
    as in Llama 3: the template's system part then takes exactly ``crop_start`` tokens, so the crop
    removes all of it and none of the user's prompt. Merges grow each word from its ``▁`` (a space)
    one character at a time, so these words always come out whole; the template's three bare words
    (right after a special token or a newline) rank after them. Any other bare word, such as the
    first word of a prompt, comes out in smaller pieces, as an unlisted word does.
    """
    from transformers import LlamaTokenizer


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
    spaced = ["▁" + w for w in dict.fromkeys(WORDS + template_words)]
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


def tiny_clip_tokenizer():
    """A CLIP tokenizer over all 256 byte symbols (so nothing is ever unknown) plus the demo words.

    Merges grow each word from its end-of-word piece leftwards, so within a word only one merge is
    ever possible and every listed word comes out whole. The special tokens take the last ids, as in
    CLIP, whose text model pools at the end-of-text token.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer


    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {piece: i for i, piece in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    merges = []
    for word in dict.fromkeys(w.lower() for w in WORDS):
        for k in range(len(word) - 2, -1, -1):
            piece = word[k:] + "</w>"
            if piece not in vocab:
                vocab[piece] = len(vocab)
                merges.append((word[k], word[k + 1:] + "</w>"))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build():
    """A ~1 MB HunyuanVideoPipeline (1 dual- and 1 single-stream block, 4 latent channels, 4x spatial /
    4x temporal VAE, 3-layer Llama and 2-layer CLIP text encoders)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    tokenizer = tiny_llama_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer()
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

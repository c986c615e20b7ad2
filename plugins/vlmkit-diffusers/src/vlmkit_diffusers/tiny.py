"""A random SDXL pipeline built from component configs, offline (tests, docs, ``vlmkit chat`` demos).

Both CLIP tokenizers are built from the BPE vocabulary that open_clip ships
(``bpe_simple_vocab_16e6.txt.gz``): the same 49,408-token vocabulary as OpenAI's CLIP, written as
the ``vocab.json`` / ``merges.txt`` pair that transformers' ``CLIPTokenizer`` reads.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

CLIP_VOCAB_SIZE = 49408

_TEXT = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": 16,
    "vocab_size": CLIP_VOCAB_SIZE,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_act": "gelu",
}

TINY_SDXL: dict[str, Any] = {
    "unet": {
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": [2, 4],
        "norm_num_groups": 8,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": [1, 1],
        # 6 size/crop ids x addition_time_embed_dim + text_encoder_2's projection width
        "projection_class_embeddings_input_dim": 6 * 8 + 16,
        # both text encoders' hidden states, concatenated
        "cross_attention_dim": 32,
    },
    "vae": {
        "block_out_channels": [16, 32],
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 32,
    },
    "text_encoder": dict(_TEXT),
    "text_encoder_2": dict(_TEXT),
    "scheduler": {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    },
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


@lru_cache(maxsize=1)
def clip_tokenizer_files() -> Path:
    """A directory with ``vocab.json`` and ``merges.txt`` of CLIP's BPE, built from open_clip's file.

    The vocabulary is ordered as CLIP's: the 256 byte symbols, the same with ``</w>``, one symbol
    per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
    """
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 1 + CLIP_VOCAB_SIZE - 2 * 256 - 2]  # 48,894 merges
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"open_clip's BPE file gave {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    out = Path(tempfile.mkdtemp(prefix="vlmkit-clip-bpe-"))
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return out


def clip_tokenizer(model_max_length: int = 77) -> Any:
    """transformers ``CLIPTokenizer`` with CLIP's vocabulary, built offline."""
    from transformers import CLIPTokenizer

    files = clip_tokenizer_files()
    return CLIPTokenizer(
        vocab=str(files / "vocab.json"),
        merges=str(files / "merges.txt"),
        model_max_length=model_max_length,
    )


def random_sdxl_pipeline(config: dict[str, Any] = TINY_SDXL) -> Any:
    """A ``StableDiffusionXLPipeline`` with random weights from component configs (keys ``unet``,
    ``vae``, ``text_encoder``, ``text_encoder_2``, ``scheduler``)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    missing = {"unet", "vae", "text_encoder", "text_encoder_2"} - set(config)
    if missing:
        raise ValueError(f"random_sdxl_pipeline: config lacks {sorted(missing)}")
    text = CLIPTextModel(CLIPTextConfig(**config["text_encoder"]))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config["text_encoder_2"]))
    max_length = config["text_encoder"].get("max_position_embeddings", 77)
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**config["vae"]),
        text_encoder=text,
        text_encoder_2=text_2,
        tokenizer=clip_tokenizer(max_length),
        tokenizer_2=clip_tokenizer(max_length),
        unet=UNet2DConditionModel(**config["unet"]),
        scheduler=EulerDiscreteScheduler(**config.get("scheduler", {})),
    )

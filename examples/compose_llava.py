"""Compose LLaVA-1.5 from parts: a CLIP ViT, no miner, an mlp2x_gelu projector, a Llama LLM.

The parts are LLaVA-1.5's (hidden_states[-2] of CLIP without the class token, mlp2x_gelu,
Vicuna's chat template) at tiny widths, so this runs offline on a CPU in seconds. The real
LLaVA-1.5-7B is the same config with real sizes: the `llava-1.5-7b` preset.
"""

from PIL import Image

import vlmkit

config = {
    "lr_encoder": {
        "name": "hf-clip-vit",
        "select_layer": -2,
        "select_feature": "patch",
        "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "image_size": 48, "patch_size": 8},
    },
    "miner": "identity",
    "projector": "mlp2x_gelu",
    "llm": {
        "name": "hf-causal-lm",
        "tokenizer": "byte-level",
        "config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 260,
                   "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3},
    },
    "chat_template": "vicuna_v1",
}

plan = vlmkit.plan(config)  # checks that the slots fit, allocates nothing
print(f"tiny LLaVA: {plan.visual_tokens_per_image} visual tokens per image")
model = vlmkit.build(config).eval()
tokens = model.encode_images([Image.new("RGB", (64, 64), "green")])
assert tokens.shape == (1, 36, 64), tokens.shape  # (48 / 8)**2 patches, LLM width 64
reply = model.chat(Image.new("RGB", (64, 64), "green"), [{"role": "user", "content": "Colour?"}],
                   max_new_tokens=4)
print(f"reply (random weights): {reply!r}")

real = vlmkit.plan("llava-1.5-7b")
print(f"llava-1.5-7b: {real.visual_tokens_per_image} visual tokens per image")
assert real.visual_tokens_per_image == 576

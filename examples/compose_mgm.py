"""Compose Mini-Gemini from parts: CLIP ViT (LR) + ConvNeXt (HR) + patch info mining + mlp2x_gelu + LLM.

The same families as `mgm-7b` at tiny widths. Mining lets each LR token attend to its M x M window
of HR features, so the visual-token count stays that of the LR grid whatever the HR resolution:
doubling the HR input here changes the window, not the count.
"""

import copy

from PIL import Image

import vlmkit

config = {
    "lr_encoder": {
        "name": "hf-clip-vit",
        "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "image_size": 64, "patch_size": 8},
    },
    "hr_encoder": {
        "name": "openclip-convnext",
        "image_size": 128,
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {"timm_model_name": "test_convnext", "timm_model_pretrained": False,
                           "timm_pool": "", "timm_proj": "mlp", "image_size": 128},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
        },
    },
    "miner": "patch_info_mining",
    "projector": "mlp2x_gelu",
    "llm": {
        "name": "hf-causal-lm",
        "tokenizer": "byte-level",
        "config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 260,
                   "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3},
    },
    "chat_template": "vicuna_v1",
    "image_aspect_ratio": "pad",
}

for hr_size in (128, 256):
    cfg = copy.deepcopy(config)
    cfg["hr_encoder"]["image_size"] = hr_size
    plan = vlmkit.plan(cfg)
    print(f"HR {hr_size} px: HR map {plan.infos['hr_encoder'].grid}^2, "
          f"{plan.visual_tokens_per_image} visual tokens")
    assert plan.visual_tokens_per_image == 64

model = vlmkit.build(config).eval()
image = Image.new("RGB", (100, 80), "white")
assert model.encode_images([image]).shape == (1, 64, 64)
print("reply (random weights):", repr(model.chat(image, [{"role": "user", "content": "Hi"}], max_new_tokens=4)))

# HD: 2 x 2 crops + a global view, as mgm-7b-hd, is two more keys.
hd = dict(copy.deepcopy(config), image_grid=2, image_global=True)
hd["lr_encoder"]["image_size"] = 64
hd["hr_encoder"]["image_size"] = 256
print(f"HD: {vlmkit.plan(hd).visual_tokens_per_image} visual tokens (5 views x 64)")
assert vlmkit.plan(hd).visual_tokens_per_image == 5 * 64

"""Register a custom vision encoder and use it in a composition.

The registration is the decorator; the constructor's keyword arguments are the component's config,
and `describe` tells the builder its output before any weights exist.
"""

import torch
from torch import nn

import vlmkit
from vlmkit.interfaces import EncoderInfo, VisionEncoder


@vlmkit.register("vision_encoder", "patch-conv")
class PatchConv(VisionEncoder):
    """One strided convolution: pixels (B, 3, S, S) -> tokens (B, (S/patch)**2, width)."""

    def __init__(self, width: int = 32, patch: int = 8, image_size: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(3, width, patch, stride=patch)
        self.info = self.describe(width, patch, image_size)

    @classmethod
    def describe(cls, width: int = 32, patch: int = 8, image_size: int = 32) -> EncoderInfo:
        return EncoderInfo(width=width, grid=image_size // patch, image_size=image_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.conv(pixels).flatten(2).transpose(1, 2)


print("registered:", "patch-conv" in vlmkit.available("vision_encoder"))
llm = {"name": "hf-causal-lm", "tokenizer": "byte-level",
       "config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 260,
                  "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}}
model = vlmkit.build({
    "lr_encoder": {"name": "patch-conv", "width": 24, "image_size": 32},
    "miner": "identity",
    "projector": "mlp2x_gelu",
    "llm": llm,
    "chat_template": "vicuna_v1",
})
tokens = model.encode_images(torch.randn(2, 3, 32, 32))
print("visual tokens:", tuple(tokens.shape))
assert tokens.shape == (2, 16, 32)

# A misfit is caught by the builder, before anything is allocated:
try:
    vlmkit.plan({"lr_encoder": {"name": "patch-conv", "width": 24}, "miner": "identity",
                 "projector": {"name": "linear", "in_dim": 48}, "llm": llm})
    raise AssertionError("the misfit was not caught")
except vlmkit.ConfigError as err:
    print("caught:", str(err).splitlines()[1].strip())

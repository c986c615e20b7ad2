"""``hf-siglip``: the SigLIP ViT image tower from Hugging Face transformers.

SigLIP has no class token, so every token is a patch: ``(image_size // patch_size) ** 2`` tokens.
The default ``select_layer=-2`` follows the LLaVA convention (LLaVA-OneVision drops SigLIP's last
layer and uses the output of the one before); ``-1`` takes the last layer's output (before the
final layer norm). The attention-pooling head is never used for token features, so it is not
built (``vision_use_head=False``); checkpoints' head weights are ignored on load.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import SiglipVisionConfig, SiglipVisionModel

from vlmkit.encoders._hf import HFViTTower
from vlmkit.registry import register


@register("vision_encoder", "hf-siglip")
class SiglipEncoder(HFViTTower):
    """SigLIP features of one hidden layer: pixels ``(B, 3, S, S)`` → ``(B, grid**2, hidden)``.

    - ``pretrained``: local directory or hub id of a SigLIP (or SigLIP vision) checkpoint.
    - ``config``: ``SiglipVisionConfig`` fields; when given, it is the architecture (else read from
      ``pretrained``).
    - ``select_layer``: index into the hidden states (0 = embeddings, -1 = last layer).
    - ``image_size``: the input side (default: the config's); another size than the config's
      interpolates the position embeddings.
    - ``frozen``: no trainable parameters and always in eval mode.
    """

    config_class = SiglipVisionConfig
    model_class = SiglipVisionModel
    has_cls = False
    config_overrides: ClassVar[dict[str, Any]] = {"vision_use_head": False}
    tiny_config: ClassVar[dict[str, Any]] = {
        "config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        }
    }

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        select_layer: int = -2,
        image_size: int | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self._build(pretrained, config, select_layer, image_size, False, frozen)

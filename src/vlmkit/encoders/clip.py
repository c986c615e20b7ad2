"""``hf-clip-vit``: the CLIP ViT image tower of transformers (Mini-Gemini's LR encoder).

Mini-Gemini and LLaVA take ``hidden_states[-2]`` of ``openai/clip-vit-large-patch14-336`` and drop
the class token: 576 tokens x 1024 at 336 px. The weights live in ``vision_tower`` (transformers 5's
``CLIPVisionModel`` keys, e.g. ``vision_tower.encoder.layers.0.*``; older checkpoints' extra
``vision_model.`` prefix is handled by ``from_pretrained``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import CLIPVisionConfig, CLIPVisionModel

from vlmkit.encoders._hf import HFViTTower
from vlmkit.registry import register

SELECT_FEATURES = ("patch", "cls_patch")


def _keep_cls(select_feature: str) -> bool:
    if select_feature not in SELECT_FEATURES:
        raise ValueError(
            f"hf-clip-vit: select_feature must be one of {SELECT_FEATURES}, got {select_feature!r}"
        )
    return select_feature == "cls_patch"


@register("vision_encoder", "hf-clip-vit")
class CLIPViTEncoder(HFViTTower):
    """CLIP ViT features of one hidden layer: pixels ``(B, 3, S, S)`` → tokens ``(B, T, hidden)``.

    - ``pretrained``: local directory or hub id of a CLIP (or CLIP vision) checkpoint.
    - ``config``: ``CLIPVisionConfig`` fields; when given, it is the architecture (else read from
      ``pretrained``).
    - ``select_layer``: index into the hidden states (0 = embeddings; -2 = Mini-Gemini's choice).
    - ``select_feature``: ``"patch"`` drops the class token (``T = grid**2``); ``"cls_patch"``
      keeps it first (``T = grid**2 + 1``).
    - ``image_size``: the input side (default: the config's); another size than the config's
      interpolates the position embeddings.
    - ``frozen``: no trainable parameters and always in eval mode.
    """

    config_class = CLIPVisionConfig
    model_class = CLIPVisionModel
    has_cls = True
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
        select_feature: str = "patch",
        image_size: int | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self.select_feature = select_feature
        self._build(pretrained, config, select_layer, image_size, _keep_cls(select_feature), frozen)

    @classmethod
    def keeps_cls(cls, config: dict[str, Any]) -> bool:
        """``select_feature="cls_patch"`` keeps the class token first."""
        return _keep_cls(config["select_feature"])

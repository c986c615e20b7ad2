"""``hf-dinov2``: DINOv2 patch tokens from transformers' ``Dinov2Model``.

Features are the ``select_layer``-th hidden state (0 = embeddings; default -2, the layer prismatic
VLMs take) with the class token dropped: ``(B, (S / patch)**2, hidden)``. DINOv2 interpolates its
position embeddings for any input size, so ``image_size`` is free (a multiple of the patch size).
Everything else (config resolution, loading, the layer pick, freezing) is vlmkit's
:class:`~vlmkit.encoders.HFViTTower`, the base of its own CLIP and SigLIP towers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import Dinov2Config, Dinov2Model

from vlmkit.encoders import HFViTTower
from vlmkit.interfaces import EncoderInfo


class DINOv2Encoder(HFViTTower):
    """DINOv2 tokens of one hidden layer: pixels ``(B, 3, S, S)`` → ``(B, (S/patch)**2, hidden)``.

    - ``pretrained``: local directory or hub id of a DINOv2 checkpoint (e.g. ``facebook/dinov2-large``).
    - ``config``: ``Dinov2Config`` fields; when given, it is the architecture.
    - ``select_layer``: index into the hidden states (0 = embeddings, -1 = last layer).
    - ``image_size``: the input side (default: the config's ``image_size``).
    - ``frozen``: no trainable parameters and always in eval mode.
    """

    config_class = Dinov2Config
    model_class = Dinov2Model
    has_cls = True
    tiny_config: ClassVar[dict[str, Any]] = {
        "config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 28,
            "patch_size": 7,
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

    @classmethod
    def info_for(
        cls, hf_config: Dinov2Config, select_layer: int, image_size: int | None, keep_cls: bool
    ) -> EncoderInfo:
        """As :meth:`HFViTTower.info_for`, and the input side must be a multiple of the patch."""
        size = hf_config.image_size if image_size is None else int(image_size)
        if size % hf_config.patch_size:
            raise ValueError(
                f"hf-dinov2: image_size={size} is not a multiple of patch_size={hf_config.patch_size}"
            )
        return super().info_for(hf_config, select_layer, size, keep_cls)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: ``(B, 3, S, S)`` → patch tokens ``(B, (S/patch)**2, hidden)``."""
        self.check_pixels(pixels)  # Dinov2Model always interpolates its position embeddings
        out = self.vision_tower(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, self.skip_tokens :]

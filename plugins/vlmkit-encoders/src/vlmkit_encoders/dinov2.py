"""``hf-dinov2``: DINOv2 patch tokens from transformers' ``Dinov2Model``.

Features are the ``select_layer``-th hidden state (0 = embeddings; default -2, the layer prismatic
VLMs take) with the class token dropped: ``(B, (S / patch)**2, hidden)``. DINOv2 interpolates its
position embeddings for any input size, so ``image_size`` is free (a multiple of the patch size).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import Dinov2Config, Dinov2Model

from vlmkit.interfaces import EncoderInfo
from vlmkit_encoders._frozen import FrozenSwitch


def _hf_config(pretrained: str | None, config: dict[str, Any] | None) -> Dinov2Config:
    if config is not None:
        fields = {k: v for k, v in config.items() if k != "model_type"}
        return Dinov2Config(**fields)
    if pretrained is None:
        raise ValueError("hf-dinov2 needs `pretrained` (a directory or hub id) or an architecture `config`")
    return Dinov2Config.from_pretrained(pretrained)


class DINOv2Encoder(FrozenSwitch):
    """DINOv2 tokens of one hidden layer: pixels ``(B, 3, S, S)`` → ``(B, (S/patch)**2, hidden)``.

    - ``pretrained``: local directory or hub id of a DINOv2 checkpoint (e.g. ``facebook/dinov2-large``).
    - ``config``: ``Dinov2Config`` fields; when given, it is the architecture.
    - ``select_layer``: index into the hidden states (0 = embeddings, -1 = last layer).
    - ``image_size``: the input side (default: the config's ``image_size``).
    - ``frozen``: no trainable parameters and always in eval mode.
    """

    name = "hf-dinov2"
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
        from vlmkit._context import should_load_pretrained

        hf_config = _hf_config(pretrained, config)
        info = self.describe(pretrained, config, select_layer, image_size, frozen)
        if pretrained is not None and should_load_pretrained():
            self.vision_tower = Dinov2Model.from_pretrained(
                pretrained, config=hf_config, dtype=torch.float32
            )
        else:
            self.vision_tower = Dinov2Model(hf_config)
        self.select_layer = select_layer
        self._finish(info, frozen)

    @classmethod
    def describe(
        cls,
        pretrained: str | None = None,
        config: dict[str, Any] | None = None,
        select_layer: int = -2,
        image_size: int | None = None,
        frozen: bool = True,
    ) -> EncoderInfo:
        """Width and grid from the config alone (reads at most a config file)."""
        hf_config = _hf_config(pretrained, config)
        layers = hf_config.num_hidden_layers
        if not -(layers + 1) <= select_layer <= layers:
            raise ValueError(
                f"hf-dinov2: select_layer={select_layer} is out of range for {layers} layers "
                f"(expected {-(layers + 1)}..{layers})"
            )
        size = hf_config.image_size if image_size is None else int(image_size)
        if size % hf_config.patch_size:
            raise ValueError(
                f"hf-dinov2: image_size={size} is not a multiple of patch_size={hf_config.patch_size}"
            )
        return EncoderInfo(
            width=hf_config.hidden_size, grid=size // hf_config.patch_size, image_size=size
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: ``(B, 3, S, S)`` → patch tokens ``(B, (S/patch)**2, hidden)``."""
        self.check_pixels(pixels)
        out = self.vision_tower(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]

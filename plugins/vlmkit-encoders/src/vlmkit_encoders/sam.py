"""``timm-sam``: the Segment Anything ViT image encoder, neck included, from timm (``samvit_*``).

DeepSeek-VL's high-resolution tower is SAM-B at 1024 px: a ``(B, 256, 64, 64)`` map after the
neck. vlmkit never downloads weights: ``pretrained`` is a local timm checkpoint file (safetensors,
or a pickle read with ``weights_only=True``), loaded through timm so its checkpoint filter resizes
position embeddings for another input size.
"""

from __future__ import annotations

from typing import Any, ClassVar

import timm
import torch

from vlmkit.interfaces import EncoderInfo, VisionEncoder, config_of, should_load_pretrained


def _create(model_name: str, model_kwargs: dict[str, Any] | None, image_size: int, checkpoint: str | None):
    if not model_name.split(".")[0].startswith("samvit_"):
        raise ValueError(f"timm-sam: model_name must be a timm samvit_* model, got {model_name!r}")
    kwargs: dict[str, Any] = {"num_classes": 0, "img_size": image_size, **(model_kwargs or {})}
    if checkpoint is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": checkpoint})
    return timm.create_model(model_name, **kwargs)


class SAMEncoder(VisionEncoder):
    """SAM image-encoder features: pixels ``(B, 3, S, S)`` → map ``(B, neck_chans, S/16, S/16)``.

    - ``model_name``: a timm ``samvit_*`` model (default SAM-B, ``samvit_base_patch16``).
    - ``pretrained``: a local checkpoint file.
    - ``model_kwargs``: extra ``timm.create_model`` arguments (``embed_dim``, ``depth``, ``neck_chans``...).
    - ``image_size``: the input side (default 1024).
    - ``frozen``: no trainable parameters and always in eval mode.
    """

    tiny_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "model_kwargs": {
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 2,
            "neck_chans": 16,
            "window_size": 2,
            "global_attn_indexes": (1,),
        },
    }

    def __init__(
        self,
        model_name: str = "samvit_base_patch16",
        pretrained: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        image_size: int = 1024,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        info = self.describe(model_name=model_name, model_kwargs=model_kwargs, image_size=image_size)
        checkpoint = pretrained if pretrained is not None and should_load_pretrained() else None
        self.trunk = _create(model_name, model_kwargs, image_size, checkpoint)
        self.finish_build(info, frozen)

    @classmethod
    def describe(cls, **kwargs: Any) -> EncoderInfo:
        """Width and grid from a meta-device build and forward (no weights, no files)."""
        c = config_of(cls, kwargs)
        model_name, model_kwargs, image_size = c["model_name"], c["model_kwargs"], c["image_size"]
        with torch.device("meta"):
            trunk = _create(model_name, model_kwargs, image_size, None)
            try:
                out = trunk.forward_features(torch.empty(1, 3, image_size, image_size))
            except (RuntimeError, AssertionError) as err:
                raise ValueError(f"timm-sam: {model_name!r} cannot take {image_size} px: {err}") from err
        _, width, grid, _ = out.shape
        return EncoderInfo(width=int(width), grid=int(grid), image_size=image_size, layout="map")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: ``(B, 3, S, S)`` → ``(B, neck_chans, S/patch, S/patch)``."""
        self.check_pixels(pixels)
        return self.trunk.forward_features(pixels)

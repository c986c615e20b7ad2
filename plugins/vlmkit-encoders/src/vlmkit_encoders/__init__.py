"""vlmkit-encoders: vision encoders beyond vlmkit's core, registered through the plugin hook.

- ``hf-dinov2``: DINOv2 (transformers ``Dinov2Model``), patch tokens of one hidden layer
  (prismatic-style DINOv2 + SigLIP hybrids).
- ``timm-sam``: the SAM ViT image encoder with its neck (timm ``samvit_*``), a feature map
  (DeepSeek-VL's high-resolution tower).
"""

from __future__ import annotations

from typing import Any, Callable

import vlmkit

__version__ = "0.1.0"


@vlmkit.hookimpl
def vlmkit_register(register: Callable[..., Any]) -> None:
    from vlmkit_encoders.dinov2 import DINOv2Encoder
    from vlmkit_encoders.sam import SAMEncoder

    register("vision_encoder", "hf-dinov2", DINOv2Encoder)
    register("vision_encoder", "timm-sam", SAMEncoder)

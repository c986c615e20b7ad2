"""Plumbing shared by the built-in vision encoders: multi-scale fusion, drop-path, layer checks.

(Freezing and pixel checks live on :class:`vlmkit.interfaces.VisionEncoder` itself.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn



def fuse_stages(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mini-Gemini's multi-scale fusion of feature maps.

    ``maps[i]``: ``(B, C_i, h_i, w_i)``. Every map after the first is resized to the first one's
    ``(h_0, w_0)`` with bilinear interpolation (computed in float32, ``align_corners=False``, then
    cast back) and all are concatenated on channels: returns ``(B, sum(C_i), h_0, w_0)``.
    """
    size = maps[0].shape[-2:]
    resized = [maps[0]]
    for feature in maps[1:]:
        if feature.shape[-2:] != size:
            feature = F.interpolate(
                feature.float(), size=size, mode="bilinear", align_corners=False
            ).to(feature.dtype)
        resized.append(feature)
    return torch.cat(resized, dim=1).contiguous()


def disable_drop_path(module: nn.Module) -> None:
    """Turn off stochastic depth in every timm ``DropPath`` inside ``module``."""
    from timm.layers import DropPath

    for sub in module.modules():
        if isinstance(sub, DropPath):
            sub.drop_prob = 0.0


def check_selected_layer(name: str, select_layer: int, num_layers: int) -> None:
    """``select_layer`` indexes the ``num_layers + 1`` hidden states (embeddings first)."""
    if not -(num_layers + 1) <= select_layer <= num_layers:
        raise ValueError(
            f"{name}: select_layer={select_layer} is out of range for {num_layers} layers "
            f"(expected {-(num_layers + 1)}..{num_layers})"
        )

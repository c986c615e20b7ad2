"""Plumbing shared by the built-in vision encoders: freezing, pixel checks, multi-scale fusion.

A frozen tower has no trainable parameters and stays in eval mode whatever ``train()`` is asked
(so dropout, stochastic depth and batch-norm statistics never change under a training loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.interfaces import EncoderInfo, VisionEncoder


class Tower(VisionEncoder):
    """A :class:`~vlmkit.interfaces.VisionEncoder` with a ``frozen`` switch and input checks.

    Subclasses build their modules, then call :meth:`_finish` with the ``frozen`` flag and the
    :class:`~vlmkit.interfaces.EncoderInfo` of the configured input size.
    """

    name: str = "vision encoder"  # the registry name, used in error messages
    frozen: bool = False

    def _finish(self, info: EncoderInfo, frozen: bool) -> None:
        self.info = info
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> Tower:
        """Switch train/eval mode; a frozen tower always stays in eval mode."""
        return super().train(mode and not self.frozen)

    def check_pixels(self, pixels: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``pixels`` is ``(B, 3, S, S)``, ``S = info.image_size``."""
        size = self.info.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(
                f"{self.name} expects pixels of shape (B, 3, {size}, {size}), "
                f"got {tuple(pixels.shape)}"
            )


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

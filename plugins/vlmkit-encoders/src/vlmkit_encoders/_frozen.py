"""A ``frozen`` switch shared by this plugin's encoders: no trainable parameters, always eval mode."""

from __future__ import annotations

import torch

from vlmkit.interfaces import EncoderInfo, VisionEncoder


class FrozenSwitch(VisionEncoder):
    """A :class:`~vlmkit.interfaces.VisionEncoder` that can be frozen and checks its input."""

    frozen: bool = False
    name: str = "encoder"

    def _finish(self, info: EncoderInfo, frozen: bool) -> None:
        self.info = info
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> FrozenSwitch:
        return super().train(mode and not self.frozen)

    def check_pixels(self, pixels: torch.Tensor) -> None:
        size = self.info.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(
                f"{self.name} expects pixels of shape (B, 3, {size}, {size}), got {tuple(pixels.shape)}"
            )

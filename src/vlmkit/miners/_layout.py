"""Conversions between token ``(B, T, C)`` and map ``(B, C, h, w)`` layouts of encoder features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vlmkit.interfaces import EncoderInfo


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w) -> (B, h*w, C)``; tokens ``(B, T, C)`` are returned unchanged."""
    return x.flatten(2).transpose(1, 2) if x.dim() == 4 else x


def as_map(x: torch.Tensor) -> torch.Tensor:
    """``(B, T, C)`` with ``T`` a square ``-> (B, C, sqrt(T), sqrt(T))``; maps returned unchanged."""
    if x.dim() == 4:
        return x
    b, t, c = x.shape
    side = math.isqrt(t)
    if side * side != t:
        raise ValueError(f"cannot lay {t} tokens out on a square grid (expected a square count)")
    return x.transpose(1, 2).reshape(b, c, side, side)


def resample(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """Resample a map ``(B, C, h, w)`` to ``(B, C, size, size)`` (``area`` or ``bilinear``) in fp32."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    y = x.float()
    if mode == "area":
        y = F.adaptive_avg_pool2d(y, size)
    elif mode == "bilinear":
        y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"unknown resample mode {mode!r}; expected 'area' or 'bilinear'")
    return y.to(x.dtype)


def check_grid(who: str, info: EncoderInfo) -> None:
    if info.extra_tokens:
        raise ValueError(
            f"{who} needs features on a square grid, but the encoder adds {info.extra_tokens} extra "
            f"token(s) (e.g. CLS); select patch features only"
        )

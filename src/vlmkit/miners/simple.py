"""Miners that mix encoder features without learned attention: ``identity``, ``channel_concat``,
``sequence_concat``.

- ``identity``: one encoder, its tokens as they are (LLaVA).
- ``channel_concat``: resample the HR features to the LR grid and concatenate channels (Eagle /
  prismatic style); width ``lr + hr``, LR token count.
- ``sequence_concat``: LR tokens followed by HR tokens; widths must agree.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmkit.interfaces import EncoderInfo, Miner, MinerInfo
from vlmkit.miners._layout import as_map, as_tokens, check_grid, resample
from vlmkit.registry import register


@register("miner", "identity")
class IdentityMiner(Miner):
    """The LR encoder's tokens unchanged: ``(B, T, C) -> (B, T, C)`` (maps are flattened)."""

    uses_hr = False
    tiny_config: dict[str, Any] = {}

    @classmethod
    def describe(cls, lr: EncoderInfo, hr: EncoderInfo | None = None, **_: Any) -> MinerInfo:
        return MinerInfo(width=lr.width, num_tokens=lr.num_tokens)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        return as_tokens(lr)


@register("miner", "channel_concat")
class ChannelConcatMiner(Miner):
    """HR features resampled to the LR grid, concatenated on channels: ``(B, N, C_lr + C_hr)``."""

    uses_hr = True
    tiny_config: dict[str, Any] = {}

    def __init__(self, resample_mode: str = "area") -> None:
        super().__init__()
        if resample_mode not in ("area", "bilinear"):
            raise ValueError(f"resample_mode must be 'area' or 'bilinear', got {resample_mode!r}")
        self.resample_mode = resample_mode

    @classmethod
    def describe(cls, lr: EncoderInfo, hr: EncoderInfo | None = None, **_: Any) -> MinerInfo:
        if hr is None:
            raise ValueError("channel_concat needs an hr_encoder")
        check_grid("channel_concat", lr)
        check_grid("channel_concat", hr)
        return MinerInfo(width=lr.width + hr.width, num_tokens=lr.grid * lr.grid)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        if hr is None:
            raise ValueError("channel_concat needs HR features, got hr=None")
        lr_map = as_map(lr)
        if hr.shape[0] != lr_map.shape[0]:
            raise ValueError(f"batch mismatch: lr has {lr_map.shape[0]} views, hr has {hr.shape[0]}")
        hr_map = resample(as_map(hr), lr_map.shape[-1], self.resample_mode)
        return as_tokens(torch.cat([lr_map, hr_map.to(lr_map.dtype)], dim=1))


@register("miner", "sequence_concat")
class SequenceConcatMiner(Miner):
    """LR tokens then HR tokens: ``(B, T_lr + T_hr, C)``; both encoders must have width ``C``."""

    uses_hr = True
    tiny_config: dict[str, Any] = {}

    @classmethod
    def describe(cls, lr: EncoderInfo, hr: EncoderInfo | None = None, **_: Any) -> MinerInfo:
        if hr is None:
            raise ValueError("sequence_concat needs an hr_encoder")
        if lr.width != hr.width:
            raise ValueError(
                f"sequence_concat needs equal widths, got lr_encoder width={lr.width} and "
                f"hr_encoder width={hr.width} (use channel_concat or a projection)"
            )
        return MinerInfo(width=lr.width, num_tokens=lr.num_tokens + hr.num_tokens)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        if hr is None:
            raise ValueError("sequence_concat needs HR features, got hr=None")
        return torch.cat([as_tokens(lr), as_tokens(hr).to(lr.dtype)], dim=1)

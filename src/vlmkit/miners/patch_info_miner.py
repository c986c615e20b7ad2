"""Mini-Gemini's patch info mining miner (``patch_info_mining``).

The miner holds MGM's three projections under MGM's names (``vlm_uni_query_projector``,
``vlm_uni_aux_projector`` for keys, ``vlm_uni_val_projector`` for values, each
``Sequential(LayerNorm, Linear)``), so official checkpoints map onto it key for key, and calls
:func:`vlmkit.ops.patch_info_mining`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlmkit.interfaces import EncoderInfo, Miner, MinerInfo
from vlmkit.ops.patch_info import BACKENDS, patch_info_mining
from vlmkit.registry import register

_NAME = "patch_info_mining"


def _projection(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


@register("miner", "patch_info_mining")
class PatchInfoMining(Miner):
    """MGM patch info mining: LR tokens attend over their HR windows; ``(B, N, C) -> (B, N, C)``.

    Args:
        lr_dim: C, the LR encoder's width (MGM: 1024).
        hr_dim: C_aux, the HR encoder's width (MGM: 2880).
        backend: how :func:`vlmkit.ops.patch_info_mining` runs: ``"auto"``, ``"reference"``,
            ``"torch"`` or ``"triton"``.
    """

    uses_hr = True
    linked_widths = {"lr_dim": ("lr_encoder", "width"), "hr_dim": ("hr_encoder", "width")}
    tiny_config: dict[str, Any] = {"lr_dim": 32, "hr_dim": 48}

    def __init__(self, lr_dim: int = 1024, hr_dim: int = 2880, backend: str = "auto") -> None:
        super().__init__()
        _check_backend(backend)
        self.lr_dim, self.hr_dim, self.backend = lr_dim, hr_dim, backend
        self.vlm_uni_query_projector = _projection(lr_dim, lr_dim)
        self.vlm_uni_aux_projector = _projection(hr_dim, lr_dim)
        self.vlm_uni_val_projector = _projection(hr_dim, lr_dim)

    @classmethod
    def describe(cls, lr: EncoderInfo, hr: EncoderInfo | None = None, **kwargs: Any) -> MinerInfo:
        """``MinerInfo(width=lr_dim, num_tokens=lr.grid**2)``; ``ValueError`` names any misfit."""
        if hr is None:
            raise ValueError(f"{_NAME} needs an hr_encoder (a feature map), got hr=None")
        if lr.layout != "tokens" or lr.extra_tokens:
            raise ValueError(
                f"{_NAME} needs LR tokens on a square grid: layout='tokens' with extra_tokens=0, "
                f"got layout={lr.layout!r}, extra_tokens={lr.extra_tokens} (drop CLS tokens)"
            )
        if hr.layout != "map":
            raise ValueError(f"{_NAME} needs the HR features as a map, got layout={hr.layout!r}")
        if hr.grid % lr.grid:
            raise ValueError(
                f"{_NAME} needs the HR grid to be a multiple of the LR grid, got HR grid "
                f"{hr.grid} and LR grid {lr.grid} ({hr.grid} % {lr.grid} = {hr.grid % lr.grid})"
            )
        for key, declared, actual, slot in (
            ("lr_dim", kwargs.get("lr_dim"), lr.width, "lr_encoder"),
            ("hr_dim", kwargs.get("hr_dim"), hr.width, "hr_encoder"),
        ):
            if declared is not None and declared != actual:
                raise ValueError(f"{_NAME}: {key}={declared} but the {slot} width is {actual}")
        if "backend" in kwargs:
            _check_backend(kwargs["backend"])
        return MinerInfo(width=lr.width, num_tokens=lr.grid * lr.grid)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        """Mine ``hr`` into ``lr``: (B, N, lr_dim), (B, hr_dim, H, W) -> (B, N, lr_dim).

        ``H = W = sqrt(N) * M`` for a window side ``M``.
        """
        if hr is None:
            raise ValueError(f"{_NAME} needs HR features, got hr=None")
        return patch_info_mining(
            lr,
            hr,
            self.vlm_uni_query_projector,
            self.vlm_uni_aux_projector,
            self.vlm_uni_val_projector,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"lr_dim={self.lr_dim}, hr_dim={self.hr_dim}, backend={self.backend!r}"


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"{_NAME}: unknown backend {backend!r}; expected one of {BACKENDS}")

